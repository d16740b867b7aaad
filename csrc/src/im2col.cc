#include "im2col.h"

#include <cstring>

namespace sparsenet {

void im2col(const float* image, const ConvGeometry& g, int64_t oy_begin, int64_t oy_end, float* cols) {
  const int64_t out_size = (oy_end - oy_begin) * g.out_w;
  for (int64_t c = 0; c < g.channels; ++c) {
    const float* plane = image + c * g.height * g.width;
    for (int64_t i = 0; i < g.kernel_h; ++i) {
      for (int64_t j = 0; j < g.kernel_w; ++j) {
        float* row = cols + ((c * g.kernel_h + i) * g.kernel_w + j) * out_size;
        for (int64_t oy = oy_begin; oy < oy_end; ++oy) {
          const int64_t iy = oy * g.stride_h - g.pad_h + i;
          float* dst = row + (oy - oy_begin) * g.out_w;
          if (iy < 0 || iy >= g.height) {
            std::memset(dst, 0, sizeof(float) * g.out_w);
            continue;
          }
          const float* src = plane + iy * g.width;
          if (g.stride_w == 1) {
            // Contiguous run: zeros left of the image, a copy, zeros right of it.
            const int64_t x0 = j - g.pad_w;  // input column of output column 0
            int64_t ox = 0;
            for (; ox < g.out_w && x0 + ox < 0; ++ox) dst[ox] = 0.0f;
            int64_t end = g.width - x0;
            if (end > g.out_w) end = g.out_w;
            if (end > ox) {
              std::memcpy(dst + ox, src + x0 + ox, sizeof(float) * (end - ox));
              ox = end;
            }
            for (; ox < g.out_w; ++ox) dst[ox] = 0.0f;
          } else {
            for (int64_t ox = 0; ox < g.out_w; ++ox) {
              const int64_t ix = ox * g.stride_w - g.pad_w + j;
              dst[ox] = (ix >= 0 && ix < g.width) ? src[ix] : 0.0f;
            }
          }
        }
      }
    }
  }
}

}  // namespace sparsenet
