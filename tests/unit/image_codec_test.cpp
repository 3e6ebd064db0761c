// image_codec: the §6 image rules on images made here (stb_image_write, libwebp's encoder, a
// hand-built GIF). Hostile input — corrupt, truncated, lying headers, random mutations — must
// end in ProxyError 400/413, never in a crash (the suite runs under ASan/UBSan).
#include <gtest/gtest.h>

#include <cstring>
#include <optional>
#include <atomic>
#include <random>
#include <thread>
#include <string>
#include <vector>

#include <stb_image.h>
#include <stb_image_write.h>
#include <webp/encode.h>

#include "imageworks/errors.hpp"
#include "imageworks/image_codec.hpp"

namespace imageworks {
namespace {

using Bytes = std::string;
using namespace std::literals;

// A smooth gradient (compresses well, like a photo); `noise` adds per-pixel random values
// (incompressible). Alpha, when ch is 2 or 4, is opaque unless `transparent`.
std::vector<unsigned char> pixels(int w, int h, int ch, bool noise = false, bool transparent = false) {
  std::vector<unsigned char> px(std::size_t(w) * h * ch);
  std::mt19937 rng(7);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < ch; ++c) {
        unsigned char v = noise ? rng() & 0xFF : (x * 255 / w + y * 128 / h + c * 60) & 0xFF;
        if ((ch == 2 || ch == 4) && c == ch - 1) v = transparent ? (x * 255 / w) & 0xFF : 255;
        px[(std::size_t(y) * w + x) * ch + c] = v;
      }
  return px;
}

void append_to(void* ctx, void* data, int size) {
  static_cast<Bytes*>(ctx)->append(static_cast<const char*>(data), std::size_t(size));
}

Bytes png(int w, int h, int ch = 3, bool noise = false, bool transparent = false) {
  Bytes out;
  auto px = pixels(w, h, ch, noise, transparent);
  EXPECT_TRUE(stbi_write_png_to_func(append_to, &out, w, h, ch, px.data(), w * ch));
  return out;
}
Bytes jpeg(int w, int h, int quality = 90) {
  Bytes out;
  auto px = pixels(w, h, 3);
  EXPECT_TRUE(stbi_write_jpg_to_func(append_to, &out, w, h, 3, px.data(), quality));
  return out;
}
Bytes bmp(int w, int h) {
  Bytes out;
  auto px = pixels(w, h, 3);
  EXPECT_TRUE(stbi_write_bmp_to_func(append_to, &out, w, h, 3, px.data()));
  return out;
}
Bytes webp_lossless(int w, int h) {
  auto px = pixels(w, h, 4);
  uint8_t* out = nullptr;
  const std::size_t n = WebPEncodeLosslessRGBA(px.data(), w, h, w * 4, &out);
  Bytes b(reinterpret_cast<const char*>(out), n);
  WebPFree(out);
  return b;
}
// GIF89a, 2x2, global palette {red, blue}, pixels red blue / blue red. LZW (min code size 2)
// as 3-bit codes clear,0,clear,1,clear,1,clear,0,end — a clear before each pixel keeps the
// code width fixed — packed LSB first: 04 c3 10 05.
Bytes gif_2x2() {
  static const unsigned char g[] = {'G', 'I', 'F', '8', '9', 'a', 2, 0, 2, 0, 0x80, 0, 0,
                                    0xFF, 0, 0, 0, 0, 0xFF,                          // palette
                                    0x2C, 0, 0, 0, 0, 2, 0, 2, 0, 0,                 // descriptor
                                    2, 4, 0x04, 0xC3, 0x10, 0x05, 0, 0x3B};          // LZW, end
  return Bytes(reinterpret_cast<const char*>(g), sizeof g);
}

struct Decoded {
  int w = 0, h = 0, n = 0;
  bool ok = false;
};
Decoded stb_decode(const Bytes& b) {
  Decoded d;
  unsigned char* p = stbi_load_from_memory(reinterpret_cast<const unsigned char*>(b.data()),
                                           int(b.size()), &d.w, &d.h, &d.n, 0);
  d.ok = p != nullptr;
  stbi_image_free(p);
  return d;
}

int status_of(const Bytes& b, const ImageLimits& lim) {
  try {
    apply_image_limits(b, lim);
    return 200;
  } catch (const ProxyError& e) {
    return e.status;
  }
}

TEST(ImageCodec, HandBuiltGifDecodesWithStb) {
  int w = 0, h = 0, n = 0;
  const Bytes g = gif_2x2();
  unsigned char* p = stbi_load_from_memory(reinterpret_cast<const unsigned char*>(g.data()),
                                           int(g.size()), &w, &h, &n, 4);
  ASSERT_NE(p, nullptr) << stbi_failure_reason();
  EXPECT_EQ(w, 2);
  EXPECT_EQ(h, 2);
  const unsigned char want[] = {255, 0, 0, 255, 0, 0, 255, 255, 0, 0, 255, 255, 255, 0, 0, 255};
  EXPECT_EQ(std::memcmp(p, want, sizeof want), 0);
  stbi_image_free(p);
}

TEST(ImageSniff, EachFormatByMagicBytes) {
  const struct {
    const char* name;
    Bytes bytes;
    ImageFormat want;
    std::string_view mime;
  } cases[] = {
      {"jpeg", jpeg(8, 8), ImageFormat::jpeg, "image/jpeg"},
      {"png", png(8, 8), ImageFormat::png, "image/png"},
      {"gif", gif_2x2(), ImageFormat::gif, "image/gif"},
      {"webp", webp_lossless(8, 8), ImageFormat::webp, "image/webp"},
      {"bmp", bmp(8, 8), ImageFormat::bmp, "image/bmp"},
      {"text starting BM", "BMW is a car brand, not a bitmap", ImageFormat::unknown, ""},
      {"riff but not webp", Bytes("RIFF\0\0\0\0WAVE", 12), ImageFormat::unknown, ""},
      {"png cut in the signature", "\x89PNG\r\n", ImageFormat::unknown, ""},
      {"empty", "", ImageFormat::unknown, ""},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(sniff_image_format(c.bytes), c.want) << c.name;
    EXPECT_EQ(mime_type(sniff_image_format(c.bytes)), c.mime) << c.name;
  }
}

TEST(ImageBase64, DecodeTable) {
  const struct {
    std::string_view in;
    std::optional<std::string> want;
  } cases[] = {
      {"", ""},           {"TWFu", "Man"},         {"TWE=", "Ma"},     {"TWE", "Ma"},
      {"TQ==", "M"},      {"TQ", "M"},             {"TW\nFu\r\n TQ==\n", "ManM"},
      {"+/8=", "\xfb\xff"}, {"TWFu=", std::nullopt}, {"TQ=", std::nullopt},
      {"T", std::nullopt}, {"TWFuT", std::nullopt}, {"TW=u", std::nullopt},
      {"TQ===", std::nullopt}, {"TW-u", std::nullopt}, {"TW_u", std::nullopt},
      {"TW\0u"sv, std::nullopt}, {"TWFu\xc3\xa9", std::nullopt},
  };
  for (const auto& c : cases) EXPECT_EQ(base64_decode(c.in), c.want) << '"' << c.in << '"';
}

TEST(ImageBase64, RoundTripsEveryLength) {
  std::mt19937 rng(1);
  for (int n = 0; n < 64; ++n) {
    Bytes s(std::size_t(n), '\0');
    for (auto& ch : s) ch = char(rng());
    EXPECT_EQ(base64_encode(s).size() % 4, 0u);
    EXPECT_EQ(base64_decode(base64_encode(s)), s) << n;
  }
}

TEST(ImageDataUrl, ParseTable) {
  const struct {
    std::string_view url;
    bool ok;
    std::string_view mime, b64;
  } cases[] = {
      {"data:image/png;base64,iVBOR", true, "image/png", "iVBOR"},
      {"DATA:image/jpeg;BASE64,/9j/", true, "image/jpeg", "/9j/"},
      {"data:image/png;name=a.png;base64,AAAA", true, "image/png", "AAAA"},
      {"data:;base64,", true, "", ""},
      {"data:image/png,rawbytes", false, "", ""},
      {"data:image/png;base64", false, "", ""},
      {"https://example.com/a.png", false, "", ""},
      {"data", false, "", ""},
  };
  for (const auto& c : cases) {
    const auto got = parse_data_url(c.url);
    ASSERT_EQ(got.has_value(), c.ok) << c.url;
    if (!got) continue;
    EXPECT_EQ(got->mime, c.mime) << c.url;
    EXPECT_EQ(got->base64, c.b64) << c.url;
  }
}

TEST(ImageCodec, WithinLimitsIsUnchangedForEveryFormat) {
  const ImageLimits lim{.max_bytes = 1 << 20, .max_edge = 64};
  for (const Bytes& b : {jpeg(40, 30), png(40, 30, 4, false, true), gif_2x2(), webp_lossless(40, 30), bmp(40, 30)}) {
    const ImageOutcome out = apply_image_limits(b, lim);
    EXPECT_FALSE(out.changed);
    EXPECT_EQ(out.bytes, b);
    EXPECT_EQ(out.format, sniff_image_format(b));
    EXPECT_GT(out.width, 0);
  }
}

TEST(ImageCodec, OverMaxEdgeIsDownscaledKeepingAspect) {
  const struct {
    const char* name;
    Bytes bytes;
    ImageFormat want;
  } cases[] = {
      {"jpeg stays jpeg", jpeg(300, 200), ImageFormat::jpeg},
      {"opaque png stays png", png(300, 200), ImageFormat::png},
      {"png with alpha stays png", png(300, 200, 4, false, true), ImageFormat::png},
      {"lossless webp becomes png", webp_lossless(300, 200), ImageFormat::png},
      {"bmp becomes png", bmp(300, 200), ImageFormat::png},
  };
  for (const auto& c : cases) {
    const ImageOutcome out = apply_image_limits(c.bytes, {.max_edge = 150});
    EXPECT_TRUE(out.changed) << c.name;
    EXPECT_EQ(out.format, c.want) << c.name;
    EXPECT_EQ(out.width, 150) << c.name;
    EXPECT_EQ(out.height, 100) << c.name;
    const Decoded d = stb_decode(out.bytes);
    EXPECT_TRUE(d.ok && d.w == 150 && d.h == 100) << c.name;
  }
}

TEST(ImageCodec, OverMaxBytesShrinksUnderTheLimit) {
  const Bytes noisy = png(1500, 1500, 3, /*noise=*/true);
  ASSERT_GT(noisy.size(), 200'000u);
  const ImageOutcome out = apply_image_limits(noisy, {.max_bytes = 200'000});
  EXPECT_TRUE(out.changed);
  EXPECT_LE(out.bytes.size(), 200'000u);
  EXPECT_EQ(out.format, ImageFormat::jpeg);  // no alpha, must shrink for bytes
  EXPECT_EQ(out.width, out.height);
  const Decoded d = stb_decode(out.bytes);
  EXPECT_TRUE(d.ok && d.w == out.width && d.h == out.height);
}

TEST(ImageCodec, TransparentImageStaysPngWhileShrinkingForBytes) {
  const Bytes b = png(400, 300, 4, /*noise=*/true, /*transparent=*/true);
  const ImageOutcome out = apply_image_limits(b, {.max_bytes = b.size() / 5});
  EXPECT_EQ(out.format, ImageFormat::png);
  EXPECT_LE(out.bytes.size(), b.size() / 5);
  EXPECT_NEAR(double(out.width) / out.height, 4.0 / 3.0, 0.05);
  EXPECT_EQ(stb_decode(out.bytes).n, 4);
}

TEST(ImageCodec, ConcurrentCallsDoNotInterfere) {
  const Bytes ok = jpeg(200, 100), bad = png(64, 48).substr(0, 60);
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 20; ++i) {
        if (apply_image_limits(ok, {.max_edge = 50}).width != 50) ++failures;
        if (status_of(bad, {.max_edge = 32}) != 400) ++failures;
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures, 0);
}

TEST(ImageCodec, LimitsThatCannotBeMetAre413) {
  const Bytes big = png(300, 200, 3, true);
  const struct {
    const char* name;
    ImageLimits lim;
    const char* mentions;
  } cases[] = {
      {"bytes, downscale off", {.max_bytes = 1000, .downscale = false}, "CHAT_PROXY_MAX_IMAGE_BYTES"},
      {"edge, downscale off", {.max_edge = 100, .downscale = false}, "CHAT_PROXY_IMAGE_MAX_EDGE"},
      {"cannot fit 100 bytes", {.max_bytes = 100}, "CHAT_PROXY_MAX_IMAGE_BYTES"},
  };
  for (const auto& c : cases) {
    try {
      apply_image_limits(big, c.lim);
      ADD_FAILURE() << c.name << ": no error";
    } catch (const ProxyError& e) {
      EXPECT_EQ(e.status, 413) << c.name;
      EXPECT_EQ(e.code, "err_payload_too_large") << c.name;
      EXPECT_NE(std::string(e.what()).find(c.mentions), std::string::npos) << c.name << ": " << e.what();
    }
  }
}

TEST(ImageCodec, GifAndBmpAreTranscodedToPngForOllama) {
  for (const Bytes& b : {gif_2x2(), bmp(33, 17)}) {
    const ImageOutcome out = apply_image_limits(b, {.only_jpeg_png_webp = true});
    EXPECT_TRUE(out.changed);
    EXPECT_EQ(out.format, ImageFormat::png);
    const Decoded d = stb_decode(out.bytes);
    const Decoded orig = stb_decode(b);
    EXPECT_TRUE(d.ok && d.w == orig.w && d.h == orig.h && out.width == orig.w);
  }
  // JPEG, PNG and WebP are what Ollama takes: untouched.
  const Bytes j = jpeg(20, 20);
  EXPECT_FALSE(apply_image_limits(j, {.only_jpeg_png_webp = true}).changed);
}

TEST(ImageCodec, BadDataIs400) {
  const Bytes good = png(64, 48);
  // Signature + IHDR claiming w x h (stb skips CRCs): rejected from the header, before any
  // allocation — 100000² already by stb's own header check, the others by ours.
  auto claims = [&](const char* w, const char* h) {
    return good.substr(0, 16) + Bytes(w, 4) + Bytes(h, 4) + good.substr(24, 9);
  };
  std::mt19937 rng(3);
  Bytes random(4096, '\0');
  for (auto& ch : random) ch = char(rng());
  const struct {
    const char* name;
    Bytes bytes;
    ImageLimits lim;
    const char* mentions;
  } cases[] = {
      {"empty", "", {}, "no image data"},
      {"random bytes", random, {}, "not a JPEG, PNG, GIF, WebP or BMP"},
      {"png cut inside IHDR", good.substr(0, 20), {}, "header"},
      {"png cut in half, decoded", good.substr(0, good.size() / 2), {.max_edge = 32}, "corrupt"},
      {"jpeg cut in its tables", jpeg(64, 48).substr(0, 300), {.max_edge = 32}, "corrupt"},
      {"png body zeroed, decoded", good.substr(0, 41) + Bytes(good.size() - 41, '\0'), {.max_edge = 32}, "corrupt"},
      {"png claims 100000x100000", claims("\0\1\x86\xA0", "\0\1\x86\xA0"), {}, "header"},
      {"png claims 12000x9000", claims("\0\0\x2E\xE0", "\0\0\x23\x28"), {}, "12000x9000 is too large"},
      {"png claims 40000x10", claims("\0\0\x9C\x40", "\0\0\0\x0A"), {}, "40000x10 is too large"},
      {"png claims 0 px wide", good.substr(0, 16) + Bytes(4, '\0') + good.substr(20), {}, ""},
      {"jpeg magic then garbage", Bytes("\xFF\xD8\xFF") + random, {}, "header"},
      {"gif cut in its header", gif_2x2().substr(0, 8), {}, "zero size"},
      {"webp header only", webp_lossless(8, 8).substr(0, 16), {}, "WebP header"},
  };
  for (const auto& c : cases) {
    try {
      apply_image_limits(c.bytes, c.lim);
      ADD_FAILURE() << c.name << ": accepted";
    } catch (const ProxyError& e) {
      EXPECT_EQ(e.status, 400) << c.name << ": " << e.what();
      EXPECT_EQ(e.code, "err_bad_request") << c.name;
      EXPECT_NE(std::string(e.what()).find(c.mentions), std::string::npos) << c.name << ": " << e.what();
    }
  }
}

TEST(ImageCodec, DataUrlConvenience) {
  const Bytes small = png(20, 10);
  const std::string url = "data:image/png;base64," + base64_encode(small);
  EXPECT_EQ(apply_image_limits_to_data_url(url, {.max_edge = 64}), std::nullopt);

  ImageOutcome info;
  const auto changed = apply_image_limits_to_data_url(
      "data:image/gif;base64," + base64_encode(gif_2x2()), {.only_jpeg_png_webp = true}, &info);
  ASSERT_TRUE(changed);
  const auto parts = parse_data_url(*changed);
  ASSERT_TRUE(parts);
  EXPECT_EQ(parts->mime, "image/png");
  EXPECT_EQ(base64_decode(parts->base64), info.bytes);
  EXPECT_EQ(info.format, ImageFormat::png);

  for (const char* bad : {"data:image/png,abc", "data:image/png;base64,@@@@", "http://x/y.png"}) {
    try {
      apply_image_limits_to_data_url(bad, {});
      ADD_FAILURE() << bad;
    } catch (const ProxyError& e) {
      EXPECT_EQ(e.status, 400) << bad;
    }
  }
}

TEST(ImageCodec, RandomMutationsEndInSuccessOrProxyError) {
  // 2000 mutations each of a PNG and a JPEG, 400 of each other format.
  const struct {
    Bytes seed;
    int rounds;
  } seeds[] = {{png(48, 32, 4, false, true), 2000}, {jpeg(48, 32), 2000},
               {webp_lossless(48, 32), 400}, {bmp(48, 32), 400}, {gif_2x2(), 400}};
  std::mt19937 rng(42);
  for (const auto& [seed, rounds] : seeds) {
    int outcomes[2] = {0, 0};
    for (int i = 0; i < rounds; ++i) {
      Bytes b = seed;
      const int edits = 1 + int(rng() % 4);
      for (int e = 0; e < edits; ++e) b[rng() % b.size()] = char(rng());
      if (rng() % 8 == 0) b.resize(rng() % b.size());
      // Half need no change (header check only), half force a full decode and re-encode.
      const ImageLimits lim = i % 2 ? ImageLimits{}
                                    : ImageLimits{.max_edge = 24, .only_jpeg_png_webp = true};
      const int status = status_of(b, lim);  // anything but ProxyError escapes: test fails
      EXPECT_TRUE(status == 200 || status == 400 || status == 413) << status;
      ++outcomes[status == 200 ? 0 : 1];
    }
    EXPECT_GT(outcomes[0], 0) << mime_type(sniff_image_format(seed));
    EXPECT_GT(outcomes[1], 0) << mime_type(sniff_image_format(seed));
  }
}

}  // namespace
}  // namespace imageworks
