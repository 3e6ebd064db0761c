#pragma once
// The downstream request as Beast's parser reads it: request line, header fields and body,
// kept in buffers the session reuses, so reading a request allocates nothing once the
// connection is warm (Beast's basic_fields allocates a node per field, the largest
// user-space cost of a small request).
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "imageworks/asio.hpp"

namespace imageworks {

class Request {
 public:
  struct Field {
    http::field known;  // http::field::unknown for names Beast does not know
    std::string_view name, val;
    std::string_view name_string() const { return name; }
    std::string_view value() const { return val; }
  };
  class iterator {
   public:
    iterator(const Request* r, std::size_t i) : r_(r), i_(i) {}
    Field operator*() const { return r_->field_at(i_); }
    iterator& operator++() {
      ++i_;
      return *this;
    }
    bool operator==(const iterator& o) const { return i_ == o.i_; }

   private:
    const Request* r_;
    std::size_t i_;
  };

  http::verb method() const { return method_; }
  std::string_view method_string() const { return view(method_text_); }
  std::string_view target() const { return view(target_); }
  unsigned version() const { return version_; }
  bool keep_alive() const { return keep_alive_; }

  // The first field of that name (case-insensitive), or "" when absent.
  std::string_view operator[](std::string_view name) const;
  std::string_view operator[](http::field f) const;
  std::size_t field_count() const { return fields_.size(); }
  iterator begin() const { return {this, 0}; }
  iterator end() const { return {this, fields_.size()}; }

  std::string& body() { return body_; }
  const std::string& body() const { return body_; }

  // Forget the last request but keep the buffers.
  void clear();

 private:
  friend class RequestParser;
  struct Span {
    std::uint32_t offset = 0, size = 0;
  };
  struct StoredField {
    http::field known;
    Span name, value;
  };
  std::string_view view(Span s) const { return std::string_view(text_).substr(s.offset, s.size); }
  Field field_at(std::size_t i) const { return {fields_[i].known, view(fields_[i].name), view(fields_[i].value)}; }
  Span store(std::string_view s);

  http::verb method_ = http::verb::unknown;
  unsigned version_ = 11;
  bool keep_alive_ = true;
  std::string text_;  // request line parts, then every field name and value, back to back
  Span method_text_, target_;
  std::vector<StoredField> fields_;
  std::string body_;
};

// Beast's HTTP/1 parser (limits, chunked bodies, keep-alive rules) filling a Request.
// More than `max_fields` header fields fail the read with http::error::header_limit and
// too_many_fields() set; a header (request line and fields) over `max_header_bytes` fails
// it with header_limit. Beast's own header_limit (set here too) bounds only what one put()
// sees: fields parsed by earlier puts no longer count, so a header sent in pieces could
// grow to `max_fields` times the limit.
class RequestParser : public http::basic_parser<true> {
 public:
  RequestParser(Request& r, std::size_t max_fields, std::size_t max_header_bytes = 16 * 1024);
  bool too_many_fields() const { return too_many_fields_; }

 private:
  void on_request_impl(http::verb method, beast::string_view method_str, beast::string_view target, int version,
                       beast::error_code& ec) override;
  void on_response_impl(int, beast::string_view, int, beast::error_code&) override {}
  void on_field_impl(http::field name, beast::string_view name_string, beast::string_view value,
                     beast::error_code& ec) override;
  void on_header_impl(beast::error_code& ec) override;
  void on_body_init_impl(const boost::optional<std::uint64_t>& content_length, beast::error_code& ec) override;
  std::size_t on_body_impl(beast::string_view body, beast::error_code& ec) override;
  void on_chunk_header_impl(std::uint64_t, beast::string_view, beast::error_code&) override {}
  std::size_t on_chunk_body_impl(std::uint64_t remain, beast::string_view body, beast::error_code& ec) override;
  void on_finish_impl(beast::error_code&) override {}

  bool count_header_bytes(std::size_t n, beast::error_code& ec);

  Request& r_;
  std::size_t max_fields_, max_header_bytes_, header_bytes_ = 0;
  bool too_many_fields_ = false;
};

}  // namespace imageworks
