#pragma once
// Incremental Server-Sent-Events parser (WHATWG event-stream rules) for upstream streams.
// Correct for any split of the byte stream; hands out views into the fed bytes when an event
// lies wholly inside them and copies into reused buffers only when an event spans feeds.
#include <cstddef>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace imageworks {

// One dispatched event, or one comment line (comment == true, text after ':' in `data`).
// The views stay valid until the next call to feed(), next() or finish().
struct SseEvent {
  std::string_view event;  // `event:` field, empty when absent (clients read that as "message")
  std::string_view data;   // `data:` lines joined with '\n'
  std::string_view id;     // `id:` field of this event, empty when absent
  bool comment = false;

  bool is_done() const { return !comment && data == "[DONE]"; }
};

// Thrown when a single line or event grows beyond the parser's limit (a broken upstream).
struct SseTooLarge : std::length_error {
  using std::length_error::length_error;
};

// Pull parser: feed(bytes) then call next() until it returns nullopt (all bytes consumed;
// the fed view may then be dropped). At end of stream call finish() and drain next() once
// more: a last line without line end and an event without its blank line are flushed then.
//
// Line ends: "\r\n", "\n" or a lone "\r"; a "\r" ending one feed and a "\n" starting the next
// is one line end. Comments (":...") are reported as they come, between events too. Unknown
// fields are ignored, except llama.cpp's legacy `error: {json}` line, which is read as
// `event: error` + `data: {json}` (SPEC §7) so callers see event == "error".
class SseParser {
 public:
  explicit SseParser(std::size_t max_event_bytes = 64u << 20) : max_event_bytes_(max_event_bytes) {}

  // Precondition: the previous bytes were drained (next() returned nullopt).
  void feed(std::string_view bytes);
  std::optional<SseEvent> next();
  void finish();
  // Back to the initial state (a new stream); keeps buffer capacity.
  void reset();

  // Callback conveniences over feed/next/finish: on_event(const SseEvent&) per event.
  template <class F>
  void feed(std::string_view bytes, F&& on_event) {
    feed(bytes);
    while (auto ev = next()) on_event(*ev);
  }
  template <class F>
  void finish(F&& on_event) {
    finish();
    while (auto ev = next()) on_event(*ev);
  }

 private:
  // A field value: a view into the current input/carry while possible, else owned bytes.
  struct Field {
    std::string_view view;
    std::string owned;
    bool is_owned = false;
    bool present = false;
    void set(std::string_view v);
    void append_line(std::string_view v);  // data: join with '\n'
    void keep();                           // copy the view into `owned` (input goes away)
    void clear();
  };

  std::optional<std::string_view> next_line();
  std::optional<SseEvent> process_line(std::string_view line);
  std::optional<SseEvent> dispatch();
  void keep_pending_fields();
  void check_size(std::size_t n) const;

  std::string_view input_;     // unconsumed part of the current feed
  std::string carry_;          // an unterminated line carried over from earlier feeds
  bool carry_consumed_ = false;  // carry_ holds a line already handed out (clear lazily)
  bool skip_lf_ = false;       // last byte seen was '\r': a leading '\n' is part of that line end
  bool first_line_ = true;     // strip a UTF-8 BOM from the very first line
  bool finished_ = false;
  bool flushed_ = false;
  bool reset_fields_ = false;  // the previous next() dispatched an event: clear before parsing on
  std::size_t max_event_bytes_;
  Field event_, data_, id_;
};

}  // namespace imageworks
