// SPEC §6 image limits: header check, decode (stb_image, libwebp), resample (stb_image_resize)
// and re-encode (stb_image_write). libstb.so carries the stb implementations; nothing here
// touches stb's global settings, so calls from several worker threads do not interfere.
// stbi_failure_reason() is not quoted: stb tries every loader, so it names the last one's
// complaint ("bad png sig" for a broken JPEG), which would mislead the client.
#include "imageworks/image_codec.hpp"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include <stb_image.h>
#include <stb_image_resize.h>
#include <stb_image_write.h>
#include <webp/decode.h>

#include "imageworks/errors.hpp"

namespace imageworks {
namespace {

constexpr int kMaxSide = 32768;
constexpr std::uint64_t kMaxPixels = 100'000'000;
constexpr int kMaxRounds = 8;
constexpr int kMinSide = 16;
constexpr int kJpegQuality = 85;

[[noreturn]] void bad_image(const std::string& why) {
  throw ProxyError(400, "err_bad_request", "invalid image: " + why);
}
[[noreturn]] void too_large(const std::string& why) {
  throw ProxyError(413, "err_payload_too_large", why);
}
[[noreturn]] void codec_failed(const char* what) {  // stb ran out of memory: not the client's fault
  throw ProxyError(500, "err_internal", std::string("image processing failed: ") + what);
}

const unsigned char* bytes_of(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

struct Size {
  int w = 0, h = 0;
  bool operator==(const Size&) const = default;
};

std::string dims(Size s) { return std::to_string(s.w) + "x" + std::to_string(s.h); }

void check_dimensions(Size s) {
  if (s.w <= 0 || s.h <= 0) bad_image("zero size (" + dims(s) + ")");
  if (s.w > kMaxSide || s.h > kMaxSide ||
      std::uint64_t(s.w) * std::uint64_t(s.h) > kMaxPixels)
    bad_image(dims(s) + " is too large (at most 32768 px a side and 100 Mpx)");
}

struct Header {
  Size size;
  bool animated = false;
  bool lossless = false;  // WebP only: a lossless WebP is re-encoded as PNG, a lossy one as JPEG
};

Header read_header(std::string_view in, ImageFormat f) {
  Header h;
  if (f == ImageFormat::webp) {
    WebPBitstreamFeatures feat;
    if (WebPGetFeatures(bytes_of(in), in.size(), &feat) != VP8_STATUS_OK)
      bad_image("WebP header is corrupt or truncated");
    h.size = {feat.width, feat.height};
    h.animated = feat.has_animation != 0;
    h.lossless = feat.format == 2;
  } else {
    int comp = 0;  // in.size() <= INT_MAX was checked by the caller
    if (!stbi_info_from_memory(bytes_of(in), int(in.size()), &h.size.w, &h.size.h, &comp))
      bad_image(std::string(mime_type(f)) + " header is corrupt or truncated");
  }
  check_dimensions(h.size);
  return h;
}

// Decoded pixels, 8 bits per channel, 1-4 channels as the file has them (GIF/WebP: 4).
struct Pixels {
  std::unique_ptr<unsigned char, void (*)(void*)> data{nullptr, stbi_image_free};
  Size size;
  int channels = 0;
};

Pixels decode(std::string_view in, ImageFormat f) {
  Pixels p;
  unsigned char* raw = nullptr;
  if (f == ImageFormat::webp) {
    raw = WebPDecodeRGBA(bytes_of(in), in.size(), &p.size.w, &p.size.h);
    p.data = {raw, WebPFree};
    p.channels = 4;
  } else {
    raw = stbi_load_from_memory(bytes_of(in), int(in.size()), &p.size.w, &p.size.h, &p.channels, 0);
    p.data.reset(raw);
  }
  if (!raw) bad_image(std::string(mime_type(f)) + " data is corrupt or truncated");
  check_dimensions(p.size);
  if (p.channels < 1 || p.channels > 4) bad_image("unsupported channel count");
  return p;
}

// True when some pixel is not fully opaque. An all-opaque alpha channel is dropped in place so
// that the encoders do not carry it (and JPEG becomes possible).
bool keep_alpha_if_used(Pixels& p) {
  if (p.channels != 2 && p.channels != 4) return false;
  const std::size_t n = std::size_t(p.size.w) * std::size_t(p.size.h);
  const int ch = p.channels;
  unsigned char* d = p.data.get();
  for (std::size_t i = 0; i < n; ++i)
    if (d[i * ch + ch - 1] != 255) return true;
  for (std::size_t i = 0; i < n; ++i) std::memmove(d + i * (ch - 1), d + i * ch, ch - 1);
  p.channels = ch - 1;
  return false;
}

std::string encode(const unsigned char* px, Size s, int ch, ImageFormat f) {
  struct Sink {
    std::string out;
    bool failed = false;
  } sink;
  // Called from C: an exception must not unwind through stb's frames.
  auto append = [](void* ctx, void* data, int len) {
    auto* k = static_cast<Sink*>(ctx);
    try {
      k->out.append(static_cast<const char*>(data), std::size_t(len));
    } catch (...) {
      k->failed = true;
    }
  };
  const int ok = f == ImageFormat::png
                     ? stbi_write_png_to_func(append, &sink, s.w, s.h, ch, px, s.w * ch)
                     : stbi_write_jpg_to_func(append, &sink, s.w, s.h, ch, px, kJpegQuality);
  if (!ok || sink.failed) codec_failed("encoder");
  return std::move(sink.out);
}

std::string resize_and_encode(const Pixels& p, Size to, ImageFormat f) {
  if (to == p.size) return encode(p.data.get(), to, p.channels, f);
  std::vector<unsigned char> out(std::size_t(to.w) * std::size_t(to.h) * std::size_t(p.channels));
  if (!stbir_resize_uint8(p.data.get(), p.size.w, p.size.h, 0, out.data(), to.w, to.h, 0,
                          p.channels))
    codec_failed("resize");
  return encode(out.data(), to, p.channels, f);
}

Size fit_edge(Size s, int edge) {
  const int longest = std::max(s.w, s.h);
  if (edge <= 0 || longest <= edge) return s;
  auto side = [&](int v) {  // 64-bit: v * edge can exceed INT_MAX
    return int(std::max<std::int64_t>(1, (std::int64_t(v) * edge + longest / 2) / longest));
  };
  return {std::min(side(s.w), edge), std::min(side(s.h), edge)};
}

// Scales by `factor` (< 1) but keeps each side at least 16 px (or its original size if smaller).
Size shrink(Size s, Size orig, double factor) {
  auto side = [&](int v, int o) { return std::max(std::min(kMinSide, o), int(v * factor)); };
  return {side(s.w, orig.w), side(s.h, orig.h)};
}

double shrink_factor(std::uint64_t limit, std::size_t size) {
  return std::sqrt(double(limit) / double(size)) * 0.9;
}

ImageFormat output_format(ImageFormat in, const Header& h, bool alpha, bool over_bytes) {
  if (alpha) return ImageFormat::png;
  if (in == ImageFormat::jpeg || over_bytes) return ImageFormat::jpeg;
  if (in == ImageFormat::webp) return h.lossless ? ImageFormat::png : ImageFormat::jpeg;
  return ImageFormat::png;
}

std::string bytes_limit(std::uint64_t max) {
  return std::to_string(max) + " bytes (CHAT_PROXY_MAX_IMAGE_BYTES)";
}

}  // namespace

std::string_view mime_type(ImageFormat f) {
  switch (f) {
    case ImageFormat::jpeg: return "image/jpeg";
    case ImageFormat::png: return "image/png";
    case ImageFormat::gif: return "image/gif";
    case ImageFormat::webp: return "image/webp";
    case ImageFormat::bmp: return "image/bmp";
    case ImageFormat::unknown: break;
  }
  return "";
}

ImageFormat sniff_image_format(std::string_view b) {
  auto at = [&](std::size_t off, std::string_view magic) {
    return b.size() >= off && b.substr(off).starts_with(magic);
  };
  if (at(0, "\xFF\xD8\xFF")) return ImageFormat::jpeg;
  if (at(0, "\x89PNG\r\n\x1A\n")) return ImageFormat::png;
  if (at(0, "GIF87a") || at(0, "GIF89a")) return ImageFormat::gif;
  if (at(0, "RIFF") && at(8, "WEBP")) return ImageFormat::webp;
  // "BM" alone is too weak (text can start with it): also require a known DIB header size.
  if (at(0, "BM") && b.size() >= 18) {
    const auto u = [&](std::size_t i) { return std::uint32_t(static_cast<unsigned char>(b[i])); };
    const std::uint32_t dib = u(14) | u(15) << 8 | u(16) << 16 | u(17) << 24;
    if (dib == 12 || dib == 40 || dib == 52 || dib == 56 || dib == 108 || dib == 124)
      return ImageFormat::bmp;
  }
  return ImageFormat::unknown;
}

ImageOutcome apply_image_limits(std::string_view encoded, const ImageLimits& lim) {
  if (encoded.empty()) bad_image("no image data");
  const ImageFormat in = sniff_image_format(encoded);
  if (in == ImageFormat::unknown) bad_image("not a JPEG, PNG, GIF, WebP or BMP image");
  if (encoded.size() > std::size_t(INT_MAX))  // stb takes an int length
    too_large("image of " + std::to_string(encoded.size()) + " bytes is too large to process");
  const Header hd = read_header(encoded, in);

  const bool over_bytes = lim.max_bytes > 0 && encoded.size() > lim.max_bytes;
  const bool over_edge = lim.max_edge > 0 && std::max(hd.size.w, hd.size.h) > lim.max_edge;
  const bool transcode =
      lim.only_jpeg_png_webp && (in == ImageFormat::gif || in == ImageFormat::bmp);
  if (!over_bytes && !over_edge && !transcode) {
    // A sound header can front a cut or damaged body: decode it all, so a corrupt image is
    // our clear 400 rather than the backend's puzzle (it runs on the CPU pool, off the loops).
    if (!hd.animated) (void)decode(encoded, in);
    return {std::string(encoded), in, hd.size.w, hd.size.h, false};
  }

  const std::string off = ", and downscaling is off (CHAT_PROXY_IMAGE_DOWNSCALE=0)";
  if (over_bytes && !lim.downscale)
    too_large("image is " + std::to_string(encoded.size()) + " bytes, over the limit of " +
              bytes_limit(lim.max_bytes) + off);
  if (over_edge && !lim.downscale)
    too_large("image is " + dims(hd.size) + " px, over the longest edge of " +
              std::to_string(lim.max_edge) + " px (CHAT_PROXY_IMAGE_MAX_EDGE)" + off);
  if (hd.animated)  // only transcode never applies to WebP, so this is over a limit
    too_large("animated WebP (" + std::to_string(encoded.size()) + " bytes, " + dims(hd.size) +
              ") is over CHAT_PROXY_MAX_IMAGE_BYTES / CHAT_PROXY_IMAGE_MAX_EDGE and cannot be "
              "downscaled");

  Pixels px = decode(encoded, in);
  const bool alpha = keep_alpha_if_used(px);
  ImageFormat fmt = output_format(in, hd, alpha, over_bytes);
  Size size = fit_edge(px.size, lim.max_edge);
  // Same format and size again would only shrink by re-encoding: start scaling at once.
  if (over_bytes && fmt == in && size == px.size)
    size = shrink(size, px.size, shrink_factor(lim.max_bytes, encoded.size()));

  std::string out;
  for (int round = 1;; ++round) {
    out = resize_and_encode(px, size, fmt);
    if (lim.max_bytes == 0 || out.size() <= lim.max_bytes)
      return {std::move(out), fmt, size.w, size.h, true};
    if (!lim.downscale)  // a transcode within the limits came out larger than the input
      too_large("image transcoded to " + std::string(mime_type(fmt)) + " is " +
                std::to_string(out.size()) + " bytes, over the limit of " +
                bytes_limit(lim.max_bytes) + off);
    if (round >= kMaxRounds) break;
    if (fmt == ImageFormat::png && !alpha) {
      fmt = ImageFormat::jpeg;
      continue;
    }
    const Size next = shrink(size, px.size, shrink_factor(lim.max_bytes, out.size()));
    if (next == size) break;
    size = next;
  }
  too_large("image of " + std::to_string(encoded.size()) + " bytes (" + dims(px.size) +
            ") cannot be downscaled under " + bytes_limit(lim.max_bytes) + ": still " +
            std::to_string(out.size()) + " bytes at " + dims(size));
}

}  // namespace imageworks
