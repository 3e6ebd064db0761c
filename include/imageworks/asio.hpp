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
}  // namespace imageworks
