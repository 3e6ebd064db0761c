// The response rules' cheap test (response_rules.hpp): one pass over the text for every
// trigger at once. It runs on every stream event and whole reply, so it is the part of §7
// the plain relay pays for: 16 bytes per step compare the first and last byte of each
// trigger (SSE2), and only positions where both match are compared in full.
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "imageworks/response_rules.hpp"

namespace imageworks {

namespace {

bool starts(const char* p, const char* end, std::string_view s) {
  return static_cast<std::size_t>(end - p) >= s.size() && std::memcmp(p, s.data(), s.size()) == 0;
}

// A trigger starts at p: a key a rule rewrites, or an escape of a lowercase letter or '_'
// (\u005x-\u007x), behind which a trigger key could hide from a byte search.
bool trigger_at(const char* p, const char* end, bool tools) {
  switch (*p) {
    case 'r': return starts(p, end, "reasoning");
    case 't': return starts(p, end, "thinking") || (tools && starts(p, end, "tool_calls"));
    case 'f': return tools && starts(p, end, "function_call");
    case '\\': return end - p >= 5 && std::memcmp(p, "\\u00", 4) == 0 && p[4] >= '5' && p[4] <= '7';
    default: return false;
  }
}

#if defined(__x86_64__)
// The same filter 32 bytes a step, for CPUs with AVX2 (chosen once at run time). Returns the
// offset where the caller's narrower loops go on; true in `found` on a match.
__attribute__((target("avx2"))) std::size_t scan_avx2(const char* p, const char* end, bool tools, bool& found) {
  const std::size_t n = static_cast<std::size_t>(end - p);
  constexpr std::size_t kReach = 12 + 32;
  std::size_t i = 0;
  // (no lambdas: they would not inherit the target attribute)
#define IW_AT(k) _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + (k)))
#define IW_EQ(v, c) _mm256_cmpeq_epi8((v), _mm256_set1_epi8(c))
  for (; i + kReach <= n; i += 32) {
    const __m256i a = IW_AT(i);
    const __m256i t = IW_EQ(a, 't');
    __m256i hit = _mm256_and_si256(IW_EQ(a, 'r'), IW_EQ(IW_AT(i + 8), 'g'));
    hit = _mm256_or_si256(hit, _mm256_and_si256(t, IW_EQ(IW_AT(i + 7), 'g')));
    hit = _mm256_or_si256(hit, _mm256_and_si256(t, IW_EQ(IW_AT(i + 9), 's')));
    hit = _mm256_or_si256(hit, _mm256_and_si256(IW_EQ(a, 'f'), IW_EQ(IW_AT(i + 12), 'l')));
    hit = _mm256_or_si256(hit, _mm256_and_si256(IW_EQ(a, '\\'), IW_EQ(IW_AT(i + 3), '0')));
#undef IW_AT
#undef IW_EQ
    for (unsigned mask = static_cast<unsigned>(_mm256_movemask_epi8(hit)); mask; mask &= mask - 1)
      if (trigger_at(p + i + static_cast<std::size_t>(__builtin_ctz(mask)), end, tools)) {
        found = true;
        return i;
      }
  }
  return i;
}

bool have_avx2() {
  __builtin_cpu_init();  // (may run before the CPU model's own constructor)
  return __builtin_cpu_supports("avx2");
}
#endif

}  // namespace

bool mentions_response_trigger(std::string_view text, bool tools) {
  const char* p = text.data();
  const char* end = p + text.size();
  std::size_t i = 0;
#if defined(__x86_64__)
  static const bool avx2 = have_avx2();
  if (avx2) {
    bool found = false;
    i = scan_avx2(p, end, tools, found);
    if (found) return true;
  }
#endif
#if defined(__SSE2__)
  // Loads reach 12 bytes past a block (the last byte of "function_call"): stay inside text.
  constexpr std::size_t kReach = 12 + 16;
  if (text.size() >= kReach) {
    auto at = [&](std::size_t k) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + k)); };
    auto eq = [](__m128i v, char c) { return _mm_cmpeq_epi8(v, _mm_set1_epi8(c)); };
    for (; i + kReach <= text.size(); i += 16) {
      const __m128i a = at(i);
      const __m128i t = eq(a, 't');
      __m128i hit = _mm_and_si128(eq(a, 'r'), eq(at(i + 8), 'g'));                   // reasoning
      hit = _mm_or_si128(hit, _mm_and_si128(t, eq(at(i + 7), 'g')));                 // thinking
      hit = _mm_or_si128(hit, _mm_and_si128(t, eq(at(i + 9), 's')));                 // tool_calls
      hit = _mm_or_si128(hit, _mm_and_si128(eq(a, 'f'), eq(at(i + 12), 'l')));       // function_call
      hit = _mm_or_si128(hit, _mm_and_si128(eq(a, '\\'), eq(at(i + 3), '0')));       // \u00
      for (unsigned mask = static_cast<unsigned>(_mm_movemask_epi8(hit)); mask; mask &= mask - 1)
        if (trigger_at(p + i + static_cast<std::size_t>(__builtin_ctz(mask)), end, tools)) return true;
    }
  }
#endif
  for (; i < text.size(); ++i)
    if (trigger_at(p + i, end, tools)) return true;
  return false;
}

}  // namespace imageworks
