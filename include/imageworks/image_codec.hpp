#pragma once
// The image rules of SPEC §6 for one encoded image: size and edge limits, downscaling and
// transcoding for backends that take only JPEG/PNG/WebP. Pure functions, no I/O, safe to call
// from several threads at once (the image worker pool); hostile bytes end in ProxyError, never
// in a crash or an unbounded allocation (header dimensions are checked before any decode).
//
// Output format when an image must be re-encoded (there is no WebP encoder here):
//  - an image with real transparency (some alpha < 255) → PNG, whatever it came as;
//  - otherwise JPEG (quality 85) for JPEG input, lossy WebP input, and any image that must
//    shrink to meet max_bytes; PNG for the rest (PNG/GIF/BMP/lossless WebP fitted to
//    max_edge or transcoded for only_jpeg_png_webp), so graphics keep sharp edges;
//  - a PNG result still over max_bytes without alpha switches to JPEG before shrinking more.
// Animated GIF: the first frame. Animated WebP cannot be decoded here: passed unchanged
// when within the limits, else 413.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace imageworks {

enum class ImageFormat { unknown, jpeg, png, gif, webp, bmp };

// "image/png", ...; "" for unknown.
std::string_view mime_type(ImageFormat f);
// By magic bytes, never by a declared MIME type (clients mislabel; backends sniff anyway).
ImageFormat sniff_image_format(std::string_view bytes);

struct ImageLimits {
  std::uint64_t max_bytes = 0;      // encoded (file) bytes after base64 decoding; 0 = no limit
  int max_edge = 0;                 // longest edge in pixels; 0 = off
  bool downscale = true;            // may downscale/re-encode to meet the limits; false → 413
  bool only_jpeg_png_webp = false;  // the backend (Ollama) takes only these: GIF/BMP → PNG
};

struct ImageOutcome {
  std::string bytes;  // the (possibly new) encoded image
  ImageFormat format = ImageFormat::unknown;
  int width = 0, height = 0;
  bool changed = false;  // bytes differ from the input (downscaled or transcoded)
};

// Standard base64 (RFC 4648 §4): padding optional, ASCII whitespace anywhere is skipped;
// nullopt on any other character, misplaced '=' or an impossible length.
std::optional<std::string> base64_decode(std::string_view in);
// Padded standard base64.
std::string base64_encode(std::string_view in);

// Applies the limits to one encoded image. Throws ProxyError
//  400 err_bad_request: not a decodable JPEG/PNG/GIF/WebP/BMP (corrupt, truncated, empty,
//      zero size, over 32768 px a side or over 100 Mpx) — the message says what is wrong;
//  413 err_payload_too_large: over max_bytes / max_edge with downscale off, or downscaling
//      (≤ 8 rounds, never below 16 px a side) cannot get under max_bytes.
// Within the limits and in an allowed format the bytes come back unchanged (changed=false),
// never re-encoded, but still decoded once so a cut or damaged body is a 400 here (an
// animated WebP, which cannot be decoded, only has its header checked).
// Downscaling keeps the aspect ratio: first to fit max_edge, then while over max_bytes by
// about sqrt(max_bytes/size)*0.9 per round, always resampled from the decoded original.
ImageOutcome apply_image_limits(std::string_view encoded, const ImageLimits& limits);

// `data:<mime>[;params];base64,<data>` → views into `url` (scheme and ";base64" match
// case-insensitively; mime may be empty). nullopt when `url` is not a base64 data URL.
struct DataUrl {
  std::string_view mime;
  std::string_view base64;
};
std::optional<DataUrl> parse_data_url(std::string_view url);

// parse_data_url + base64_decode + apply_image_limits, then a new data URL carrying the mime
// of the resulting format. nullopt when the image is unchanged: the caller keeps its original
// string (even if its declared mime was wrong), no copy. Throws ProxyError 400 for a
// malformed data URL or bad base64, and whatever apply_image_limits throws. `info`, when
// given, receives the outcome (its bytes are the decoded image).
std::optional<std::string> apply_image_limits_to_data_url(std::string_view url,
                                                          const ImageLimits& limits,
                                                          ImageOutcome* info = nullptr);

}  // namespace imageworks
