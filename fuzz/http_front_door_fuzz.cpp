// Fuzz target http_front_door: the bytes a client sends on one keep-alive connection, read
// as Server::run_session reads them (RequestParser under the header, field and body limits,
// the Content-Length check, pipelined requests from the same buffer), then each body through
// the forwarder's first step, parse_forward_request (the request scan).
//
// Oracles: the wire split at points the option byte seeds gives the same requests and scan
// results as the whole wire in one read (TCP may cut anywhere), and is refused where the
// whole wire is; a body the scan accepts is a JSON object nlohmann reads the same way
// (model, stream). Clean rejections: the parser's error codes and ProxyError from
// parse_forward_request.
#include <cstring>

#include <nlohmann/json.hpp>

#include "fuzz_input.hpp"
#include "imageworks/forwarder.hpp"
#include "imageworks/http_read.hpp"
#include "imageworks/request.hpp"

namespace {

using namespace imageworks;
using fuzz::FuzzInput;

// The server's defaults (ServerOptions) except the body limit: smaller, so a fuzzed
// Content-Length cannot make every run reserve 32 MiB.
constexpr std::size_t kMaxHeaderBytes = 16 * 1024, kMaxHeaderFields = 100, kMaxBodyBytes = 256 * 1024;
constexpr int kMaxRequests = 16;

// The client's bytes, one piece per socket read; the peer closes after the last.
struct Wire {
  std::vector<std::string_view> pieces;
  std::size_t next = 0;
};

// read_http without a socket: parse what is buffered, else "read" the next piece.
beast::error_code read(Wire& wire, beast::flat_buffer& buffer, RequestParser& parser, ReadUntil until) {
  beast::error_code ec;
  while (!parse_buffered(buffer, parser, until, ec)) {
    if (wire.next == wire.pieces.size()) {
      if (!parser.got_some()) return http::error::end_of_stream;
      ec = {};
      parser.put_eof(ec);
      return ec;
    }
    const std::string_view piece = wire.pieces[wire.next++];
    if (piece.empty()) continue;
    auto room = buffer.prepare(piece.size());
    std::memcpy(room.data(), piece.data(), piece.size());
    buffer.commit(piece.size());
  }
  return ec;
}

// What the forwarder's parse step made of a body.
struct ScanResult {
  int status = 0;  // 0 = accepted, else the ProxyError's
  std::string code, requested_model, tools_field;
  bool stream = false, may_have_images = false;
  bool operator==(const ScanResult&) const = default;
};

std::string_view route_of(std::string_view target, bool option) {
  target = target.substr(0, target.find('?'));
  for (std::string_view r : {"/v1/chat/completions", "/v1/completions", "/v1/embeddings"})
    if (target == r) return target.substr(4);
  return option ? "completions" : "chat/completions";
}

ScanResult scan_body(std::string_view route, const std::string& body) {
  ScanResult r;
  try {
    ForwardRequest fr = parse_forward_request(route, body);
    r.requested_model = fr.requested_model;
    r.stream = fr.stream;
    r.tools_field = fr.tools_field;
    r.may_have_images = fr.may_have_images;
    // The scan accepted a JSON object: nlohmann (the tree the message rules build) agrees.
    const auto& bytes = fr.payload.bytes();
    FUZZ_CHECK(bytes == body);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(bytes);
    } catch (const nlohmann::json::out_of_range&) {
      return r;  // a number beyond a double (1e999): relayed as sent, nlohmann cannot hold it
    }
    FUZZ_CHECK(j.is_object());
    FUZZ_CHECK(j["model"].is_string() && j["model"].get<std::string>() == fr.requested_model);
    FUZZ_CHECK(fr.stream == (j.contains("stream") && j["stream"] == true));
    if (!fr.prompt_raw.empty())
      FUZZ_CHECK(fr.prompt_raw.data() >= bytes.data() && fr.prompt_raw.data() + fr.prompt_raw.size() <= bytes.data() + bytes.size());
  } catch (const ProxyError& e) {
    FUZZ_CHECK(e.status == 400);
    r.status = e.status;
    r.code = e.code;
  }
  return r;
}

// One request as the session saw it, or how the connection ended.
struct Outcome {
  int refused = 0;  // 431/413/400 as the session answers, -1 = closed without a reply, 0 = read
  std::string error;
  std::string method, target, body;
  unsigned version = 0;
  bool keep_alive = false;
  std::vector<std::pair<std::string, std::string>> fields;
  ScanResult scan;
  bool operator==(const Outcome&) const = default;
};

std::vector<Outcome> serve(Wire wire, bool route_option) {
  std::vector<Outcome> out;
  beast::flat_buffer buffer;
  Request req;
  for (int n = 0; n < kMaxRequests; ++n) {
    Outcome o;
    RequestParser parser(req, kMaxHeaderFields, kMaxHeaderBytes);
    parser.header_limit(static_cast<std::uint32_t>(kMaxHeaderBytes));
    parser.body_limit(kMaxBodyBytes);
    beast::error_code ec = read(wire, buffer, parser, ReadUntil::header);
    if (ec && parser.too_many_fields()) {
      o.refused = 431;
    } else if (!ec) {
      auto len = parser.content_length();
      if (len && *len > kMaxBodyBytes) o.refused = 413;
      else if (!parser.is_done()) ec = read(wire, buffer, parser, ReadUntil::message);
    }
    if (ec && !o.refused) {
      o.error = ec.message();
      o.refused = ec == http::error::header_limit                                  ? 431
                  : ec == http::error::body_limit                                  ? 413
                  : ec.category() == http::make_error_code(http::error::bad_method).category() &&
                          ec != http::error::end_of_stream && ec != http::error::partial_message
                      ? 400
                      : -1;
    }
    if (o.refused) {
      out.push_back(std::move(o));
      break;
    }
    o.method = req.method_string();
    o.target = req.target();
    o.version = req.version();
    o.keep_alive = req.keep_alive();
    for (const auto& f : req) o.fields.emplace_back(f.name_string(), f.value());
    o.body = req.body();
    o.scan = scan_body(route_of(req.target(), route_option), req.body());
    const bool again = req.keep_alive();
    out.push_back(std::move(o));
    if (!again) break;
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzInput in(data, size);
  static constexpr std::size_t kMaxPiece[] = {1, 3, 7, 64, 512, 4096, 16384, 65536};
  const auto whole = serve(Wire{{in.payload}}, in.bit(3));
  const auto cuts = fuzz::split_points(in.payload.size(), in.options, kMaxPiece[in.options & 7u]);
  const auto split = serve(Wire{fuzz::split(in.payload, cuts)}, in.bit(3));
  // The same requests are served; a connection refused in both runs may be refused for
  // different reasons: Beast checks the request line as soon as it arrives, so a bad one
  // read whole is a 400 but, cut before its line end, waits for the header (EOF: closed).
  FUZZ_CHECK(split.size() == whole.size());
  for (std::size_t i = 0; i < whole.size(); ++i)
    FUZZ_CHECK(split[i] == whole[i] || (i + 1 == whole.size() && split[i].refused && whole[i].refused));
  return 0;
}
