#include "imageworks/sse.hpp"

#include <cstring>

#include <algorithm>

namespace imageworks {

namespace {

constexpr std::string_view kBom = "\xEF\xBB\xBF";

// Position of the first '\r' or '\n', or npos. A plain loop: the compiler vectorises it well
// enough and, unlike find_first_of, it has no per-call set setup.
// The first '\n' or '\r'. Two memchr calls (vectorised in libc) beat a byte loop; the
// '\r' search stops at the '\n', so the whole is still one pass over the line.
std::size_t find_eol(std::string_view s) {
  if (s.empty()) return std::string_view::npos;  // memchr must not see a null pointer
  const char* p = s.data();
  const auto* nl = static_cast<const char*>(std::memchr(p, '\n', s.size()));
  const std::size_t limit = nl ? static_cast<std::size_t>(nl - p) : s.size();
  if (const auto* cr = static_cast<const char*>(std::memchr(p, '\r', limit))) return static_cast<std::size_t>(cr - p);
  return nl ? limit : std::string_view::npos;
}

std::string_view strip_one_space(std::string_view v) {
  if (!v.empty() && v.front() == ' ') v.remove_prefix(1);
  return v;
}

}  // namespace

void SseParser::Field::set(std::string_view v) {
  view = v;
  is_owned = false;
  present = true;
}

void SseParser::Field::append_line(std::string_view v) {
  if (!present) return set(v);
  if (!is_owned) {
    owned.assign(view);
    is_owned = true;
  }
  owned += '\n';
  owned += v;
  view = owned;
}

void SseParser::Field::keep() {
  if (!present || is_owned) return;
  owned.assign(view);
  view = owned;
  is_owned = true;
}

void SseParser::Field::clear() {
  view = {};
  owned.clear();  // keeps capacity: the next spanning event reuses it
  is_owned = false;
  present = false;
}

void SseParser::feed(std::string_view bytes) {
  // Views handed out point into the previous bytes; silently replacing undrained input
  // would drop events, so make the misuse loud.
  if (!input_.empty()) throw std::logic_error("SseParser::feed before the previous bytes were drained");
  input_ = bytes;
}

void SseParser::finish() { finished_ = true; }

void SseParser::reset() {
  input_ = {};
  carry_.clear();
  carry_consumed_ = skip_lf_ = finished_ = flushed_ = reset_fields_ = false;
  first_line_ = true;
  event_.clear();
  data_.clear();
  id_.clear();
}

std::optional<SseEvent> SseParser::next() {
  if (reset_fields_) {
    event_.clear();
    data_.clear();
    id_.clear();
    reset_fields_ = false;
  }
  while (auto line = next_line()) {
    if (auto ev = process_line(*line)) return ev;
  }
  if (finished_ && !flushed_) {
    flushed_ = true;  // end of stream: an event missing its blank line still counts
    return dispatch();
  }
  return std::nullopt;
}

void SseParser::check_size(std::size_t n) const {
  if (n > max_event_bytes_) {
    throw SseTooLarge("SSE line or event exceeds " + std::to_string(max_event_bytes_) + " bytes");
  }
}

// Fields may point into input_ or carry_; both change after this feed is drained.
void SseParser::keep_pending_fields() {
  event_.keep();
  data_.keep();
  id_.keep();
}

std::optional<std::string_view> SseParser::next_line() {
  if (skip_lf_ && !input_.empty()) {
    if (input_.front() == '\n') input_.remove_prefix(1);
    skip_lf_ = false;
  }
  const std::size_t eol = find_eol(input_);
  if (eol == std::string_view::npos) {
    keep_pending_fields();
    if (carry_consumed_) {
      carry_.clear();
      carry_consumed_ = false;
    }
    check_size(carry_.size() + input_.size());
    carry_.append(input_);
    input_ = {};
    if (finished_ && !carry_.empty()) {  // the stream's last line, without a line end
      carry_consumed_ = true;
      return std::string_view(carry_);
    }
    return std::nullopt;
  }

  std::string_view line = input_.substr(0, eol);
  if (!carry_consumed_ && !carry_.empty()) {  // the line began in an earlier feed
    check_size(carry_.size() + eol);
    carry_.append(line);
    carry_consumed_ = true;
    line = carry_;
  }
  std::size_t advance = eol + 1;
  if (input_[eol] == '\r') {
    if (advance < input_.size()) {
      if (input_[advance] == '\n') ++advance;
    } else {
      skip_lf_ = true;  // the '\n' of a "\r\n" may open the next feed
    }
  }
  input_.remove_prefix(advance);
  return line;
}

std::optional<SseEvent> SseParser::process_line(std::string_view line) {
  if (first_line_) {
    first_line_ = false;
    if (line.substr(0, kBom.size()) == kBom) line.remove_prefix(kBom.size());
  }
  if (line.empty()) return dispatch();
  if (line.front() == ':') return SseEvent{{}, strip_one_space(line.substr(1)), {}, true};

  const std::size_t colon = line.find(':');
  const std::string_view name = line.substr(0, colon);
  const std::string_view value =
      colon == std::string_view::npos ? std::string_view{} : strip_one_space(line.substr(colon + 1));

  if (name == "data") {
    check_size(data_.view.size() + value.size() + 1);
    data_.append_line(value);
  } else if (name == "event") {
    event_.set(value);
  } else if (name == "id") {
    if (value.find('\0') == std::string_view::npos) id_.set(value);  // WHATWG: ignore ids with NUL
  } else if (name == "error") {
    // llama.cpp's legacy error line: same as "event: error" + "data: <value>".
    check_size(data_.view.size() + value.size() + 1);
    event_.set("error");
    data_.append_line(value);
  }
  // "retry" and unknown fields: ignored.
  return std::nullopt;
}

std::optional<SseEvent> SseParser::dispatch() {
  if (!data_.present) {  // WHATWG: nothing to dispatch without data; drop event/id
    event_.clear();
    id_.clear();
    return std::nullopt;
  }
  reset_fields_ = true;
  return SseEvent{event_.view, data_.view, id_.view, false};
}

}  // namespace imageworks
