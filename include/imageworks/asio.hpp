#pragma once
// One place that pulls in Asio/Beast. Boost 1.74's awaitable.hpp uses std::exchange
// without including <utility>, so it must come first.
#include <utility>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace imageworks {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = boost::asio::ip::tcp;

// Every event loop is an io_context, so coroutines and their completions use its concrete
// executor: Asio's default (any_io_executor) type-erases it at every suspension and resume.
using Executor = asio::io_context::executor_type;
template <class T = void>
using Task = asio::awaitable<T, Executor>;
inline constexpr asio::use_awaitable_t<Executor> use_task{};
}  // namespace imageworks
