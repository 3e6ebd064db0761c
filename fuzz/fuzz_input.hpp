#pragma once
// What every harness shares. An input is one option byte, then the payload: the option byte
// picks settings and seeds the split points, so a seed file is a readable request, stream or
// registry with one printable byte in front ('0' is a fine default).
//
// A finding is anything but a clean rejection: harnesses catch the exceptions the code
// documents as its error path and call fuzz_fail() when an oracle is broken, which aborts
// so that libFuzzer (and the replay runner, through ASan/abort) report it with the input.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <vector>

namespace imageworks::fuzz {

[[noreturn]] inline void fuzz_fail(const char* what) {
  std::fprintf(stderr, "fuzz oracle failed: %s\n", what);
  std::fflush(stderr);
  std::abort();
}

#define FUZZ_CHECK(cond)                              \
  do {                                                \
    if (!(cond)) ::imageworks::fuzz::fuzz_fail(#cond); \
  } while (0)

struct FuzzInput {
  std::uint8_t options = 0;
  std::string_view payload;

  FuzzInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return;
    options = data[0];
    payload = std::string_view(reinterpret_cast<const char*>(data) + 1, size - 1);
  }
  bool bit(int n) const { return (options >> n) & 1u; }
};

// Split points for `size` bytes from `seed`: a small xorshift, so the same input always
// splits the same way. Piece sizes run from 1 byte up to `max_piece`.
inline std::vector<std::size_t> split_points(std::size_t size, std::uint32_t seed, std::size_t max_piece) {
  std::vector<std::size_t> cuts;
  std::uint32_t x = seed * 2654435761u + 0x9E3779B9u;
  if (x == 0) x = 1;
  for (std::size_t at = 0; at < size;) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    at += 1 + x % (max_piece == 0 ? 1 : max_piece);
    if (at < size) cuts.push_back(at);
  }
  return cuts;
}

// The pieces of `s` between the cut points.
inline std::vector<std::string_view> split(std::string_view s, const std::vector<std::size_t>& cuts) {
  std::vector<std::string_view> pieces;
  std::size_t from = 0;
  for (std::size_t cut : cuts) {
    pieces.push_back(s.substr(from, cut - from));
    from = cut;
  }
  pieces.push_back(s.substr(from));
  return pieces;
}

}  // namespace imageworks::fuzz
