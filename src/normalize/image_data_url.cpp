// SPEC §6 image parts as data URLs: RFC 4648 base64 and `data:` URL parsing around
// apply_image_limits (image_codec.cpp). Split from the codec to keep each file readable.
#include <algorithm>
#include <array>
#include <cstdint>

#include "imageworks/errors.hpp"
#include "imageworks/image_codec.hpp"

namespace imageworks {
namespace {

constexpr std::string_view kBase64Alphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

constexpr std::array<std::int8_t, 256> kBase64Values = [] {
  std::array<std::int8_t, 256> t{};
  t.fill(-1);
  for (std::size_t i = 0; i < kBase64Alphabet.size(); ++i)
    t[static_cast<unsigned char>(kBase64Alphabet[i])] = std::int8_t(i);
  return t;
}();

bool is_space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return (x >= 'A' && x <= 'Z' ? x + 32 : x) == y;  // b is lower case
         });
}

}  // namespace

std::optional<std::string> base64_decode(std::string_view in) {
  std::string out;
  out.reserve(in.size() / 4 * 3 + 3);
  std::uint32_t acc = 0;  // unsigned: shifting old bits out is defined
  int bits = 0;
  std::size_t symbols = 0, pad = 0;
  for (unsigned char c : in) {
    if (is_space(c)) continue;
    if (c == '=') {
      if (++pad > 2) return std::nullopt;
      continue;
    }
    const int v = kBase64Values[c];
    if (v < 0 || pad > 0) return std::nullopt;  // foreign character, or data after '='
    acc = acc << 6 | std::uint32_t(v);
    ++symbols;
    if ((bits += 6) >= 8) {
      bits -= 8;
      out.push_back(char((acc >> bits) & 0xFF));
    }
  }
  if (symbols % 4 == 1 || (pad > 0 && (symbols + pad) % 4 != 0)) return std::nullopt;
  return out;
}

std::string base64_encode(std::string_view in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  std::size_t i = 0;
  auto byte = [&](std::size_t k) { return std::uint32_t(static_cast<unsigned char>(in[k])); };
  for (; i + 3 <= in.size(); i += 3) {
    const std::uint32_t v = byte(i) << 16 | byte(i + 1) << 8 | byte(i + 2);
    for (int s = 18; s >= 0; s -= 6) out.push_back(kBase64Alphabet[(v >> s) & 63]);
  }
  if (const std::size_t rest = in.size() - i; rest > 0) {
    const std::uint32_t v = byte(i) << 16 | (rest == 2 ? byte(i + 1) << 8 : 0);
    out.push_back(kBase64Alphabet[(v >> 18) & 63]);
    out.push_back(kBase64Alphabet[(v >> 12) & 63]);
    out.push_back(rest == 2 ? kBase64Alphabet[(v >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

std::optional<DataUrl> parse_data_url(std::string_view url) {
  constexpr std::string_view kScheme = "data:", kBase64 = ";base64";
  if (url.size() < kScheme.size() || !iequals(url.substr(0, kScheme.size()), kScheme))
    return std::nullopt;
  const std::size_t comma = url.find(',', kScheme.size());
  if (comma == std::string_view::npos) return std::nullopt;
  std::string_view meta = url.substr(kScheme.size(), comma - kScheme.size());
  if (meta.size() < kBase64.size() || !iequals(meta.substr(meta.size() - kBase64.size()), kBase64))
    return std::nullopt;
  meta.remove_suffix(kBase64.size());
  return DataUrl{meta.substr(0, meta.find(';')), url.substr(comma + 1)};
}

std::optional<std::string> apply_image_limits_to_data_url(std::string_view url,
                                                          const ImageLimits& limits,
                                                          ImageOutcome* info) {
  const auto parts = parse_data_url(url);
  if (!parts) throw ProxyError(400, "err_bad_request", "image_url is not a base64 data: URL");
  auto bytes = base64_decode(parts->base64);
  if (!bytes) throw ProxyError(400, "err_bad_request", "image data URL has invalid base64");
  ImageOutcome out = apply_image_limits(*bytes, limits);
  std::optional<std::string> result;
  if (out.changed) {
    result = "data:";
    *result += mime_type(out.format);
    *result += ";base64,";
    *result += base64_encode(out.bytes);
  }
  if (info) *info = std::move(out);
  return result;
}

}  // namespace imageworks
