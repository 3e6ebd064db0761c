#pragma once
// A minimal HTTPS upstream for TLS tests: a self-signed certificate for "localhost"
// (made with the openssl CLI into a temp dir), 127.0.0.1 on an ephemeral port, answering
// every POST with a fixed chat.completion. Records the SNI name each handshake carried.
#include <memory>
#include <string>
#include <vector>

namespace imageworks::test {

class TlsUpstream {
 public:
  TlsUpstream();
  ~TlsUpstream();
  unsigned short port() const;
  std::string cert_path() const;         // PEM, trust it with SSL_CERT_FILE
  std::vector<std::string> sni_names() const;  // one per completed handshake
  std::size_t requests() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace imageworks::test
