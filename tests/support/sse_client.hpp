#pragma once
// A test client that reads a streamed (chunked SSE) response incrementally, event by
// event, so tests can observe what arrived when. Blocking, with a receive timeout.
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace imageworks::test {

class SseClient {
 public:
  // Connects to 127.0.0.1:port, POSTs body to target and reads the response head.
  SseClient(unsigned short port, const std::string& target, const std::string& body,
            std::chrono::milliseconds recv_timeout = std::chrono::seconds(20),
            const std::vector<std::pair<std::string, std::string>>& headers = {});
  ~SseClient();
  int status() const;
  std::string header(const std::string& name) const;
  // The next frame's text ("data: {...}" without the blank line, or ": comment"); nullopt
  // at the end of the response or on timeout/error.
  std::optional<std::string> next_frame();
  // All remaining frames until the response ends.
  std::vector<std::string> rest();
  std::string raw_body() const;  // every body byte read so far
  void close();                  // drop the connection (a client going away)

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The JSON payloads of "data: " frames other than [DONE].
std::vector<std::string> data_payloads(const std::vector<std::string>& frames);
// The stream ended with [DONE] and no error event.
bool stream_completed(const std::vector<std::string>& frames);

}  // namespace imageworks::test
