// Conv2d's dense Winograd convolution (auto's fourth choice for stride-1 3x3
// and 5x5 convolutions; see layers.h). F(m x m, r x r) with 6x6 input tiles:
// F(4x4, 3x3) computes 16 outputs from 36 products where direct convolution
// takes 144 multiply-adds, F(2x2, 5x5) 4 outputs from 36 instead of 100.
// Per block of output tiles: every input channel's tiles transformed
// (V = BT d B, 36 floats a tile), 36 dense products M[xi] = U[xi] V[xi] of
// the transformed weights (rows() x in_channels) by the transformed tiles
// (in_channels x tiles) in the dense direct convolution's register tiles
// (6 x 16, 6 x 32 with AVX-512), then every output channel's tiles
// transformed back (Y = AT M A) with the bias and ReLU.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels.h"
#include "sparsenet/errors.h"
#include "sparsenet/layers.h"
#include "thread_pool.h"

namespace sparsenet {
namespace {

// A block's transformed input and products ((n * n) x (in + out channels) x
// tiles floats) within about this much of L2; at least one register tile's
// columns, 16, or 32 where the table has the wide tile. VGG-16's layers (256
// to 1,024 channels in and out) get that least: with 32 tiles instead of 16
// on Zen 5 (one thread, bench/ab.py, pinned to dense-winograd) conv1_2 ran
// 1.36x faster, conv2_2 1.50x, conv3_1 1.69x, conv4_2 and conv5_2 1.78x:
// wide tiles, and each block's pass over the transformed weights (36 MB for
// conv4_2's, more than the L3) serving twice the tiles. 64 tiles: 0.87-1.12x.
constexpr size_t kWinogradBlockBytes = 512 * 1024;
// Below this many multiply-adds per image (of direct convolution) a layer
// runs on one thread, as dense direct convolution does.
constexpr double kMinParallelWinogradWork = 256.0 * 1024.0;
// Phase copies of at least this many floats (1 MiB) are filled by all workers.
constexpr size_t kParallelPhaseFloats = 256 * 1024;

// Toom-Cook matrices of F(m, r), n = m + r - 1 (Lavin & Gray, CVPR 2016, as
// Lavin's wincnn derives them): the interpolation points 0, 1, -1, 2, -2 and
// infinity; y = AT [(G g) . (BT d)] is the correlation of d (n) with g (r).
// With E_k the n x k matrix that evaluates a polynomial of degree k - 1 at
// the points (its last row picks the leading coefficient, the point at
// infinity): AT = E_m^T, G = E_r and BT = inverse(E_n)^T, BT's rows scaled by
// f_i = prod_{l != i} (p_i - p_l) and G's divided by it, so that BT and AT are
// small integers (exact in float) and only the weights' transform, done once
// in double, carries fractions.
struct ToomCook {
  std::vector<double> at, g, bt;  // m x n, n x r, n x n; row-major
};

ToomCook toom_cook(size_t m, size_t r) {
  const size_t n = m + r - 1;
  const double points[] = {0.0, 1.0, -1.0, 2.0, -2.0};
  if (n - 1 > sizeof(points) / sizeof(points[0])) throw FormatError("winograd: tile too large");
  const auto eval = [&](size_t k) {
    std::vector<double> e(n * k, 0.0);
    for (size_t i = 0; i + 1 < n; ++i)
      for (size_t j = 0; j < k; ++j) e[i * k + j] = std::pow(points[i], static_cast<double>(j));
    e[(n - 1) * k + k - 1] = 1.0;
    return e;
  };
  // inverse(E_n) by Gauss-Jordan elimination with partial pivoting.
  std::vector<double> a = eval(n), inv(n * n, 0.0);
  for (size_t i = 0; i < n; ++i) inv[i * n + i] = 1.0;
  for (size_t col = 0; col < n; ++col) {
    size_t pivot = col;
    for (size_t i = col + 1; i < n; ++i)
      if (std::abs(a[i * n + col]) > std::abs(a[pivot * n + col])) pivot = i;
    for (size_t j = 0; j < n; ++j) {
      std::swap(a[col * n + j], a[pivot * n + j]);
      std::swap(inv[col * n + j], inv[pivot * n + j]);
    }
    const double d = a[col * n + col];
    for (size_t j = 0; j < n; ++j) {
      a[col * n + j] /= d;
      inv[col * n + j] /= d;
    }
    for (size_t i = 0; i < n; ++i) {
      if (i == col) continue;
      const double f = a[i * n + col];
      for (size_t j = 0; j < n; ++j) {
        a[i * n + j] -= f * a[col * n + j];
        inv[i * n + j] -= f * inv[col * n + j];
      }
    }
  }
  std::vector<double> f(n, 1.0);
  for (size_t i = 0; i + 1 < n; ++i)
    for (size_t l = 0; l + 1 < n; ++l)
      if (l != i) f[i] *= points[i] - points[l];
  ToomCook t;
  const std::vector<double> em = eval(m), er = eval(r);
  t.at.resize(m * n);
  for (size_t a_ = 0; a_ < m; ++a_)
    for (size_t i = 0; i < n; ++i) t.at[a_ * n + i] = em[i * m + a_];
  t.g.resize(n * r);
  for (size_t i = 0; i < n; ++i)
    for (size_t k = 0; k < r; ++k) t.g[i * r + k] = er[i * r + k] / f[i];
  t.bt.resize(n * n);
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < n; ++j) {
      const double v = f[i] * inv[j * n + i];
      const double rounded = std::round(v);
      t.bt[i * n + j] = std::abs(v - rounded) < 1e-9 ? rounded : v;  // integers in exact arithmetic
    }
  return t;
}

size_t ceil_div(size_t a, size_t b) { return (a + b - 1) / b; }

// Floats from one of a block's 36 transformed matrices (rows x block) to the
// next. The products' tile calls (conv_dense_tile) read up to
// kConvDenseWideCols floats of each row, from places below a block's tile
// count (at most the block, a multiple of 16) with more than 16 tiles left
// for a wide one, so the last row's run at most kConvDenseWideCols - 17
// floats past the block: into the pad.
constexpr size_t kWinogradPad = 16;
static_assert(kWinogradPad >= kConvDenseWideCols - 17, "the products' reads past a block");
size_t winograd_stride(size_t rows, size_t block) { return rows * block + kWinogradPad; }

// How one input size is tiled: tiles_y rows of groups_x groups of
// kWinogradLanes tiles, over a phase-split copy of the padded input.
struct Tiling {
  size_t tiles_y, groups_x, groups;
  size_t phase_rows, phase_len;  // rows of the padded input kept; floats per phase of a row
  size_t phase_floats;           // in_channels x phase_rows x m x phase_len
};

Tiling tiling(size_t m, size_t n, size_t channels, int64_t out_h, int64_t out_w) {
  Tiling t{};
  t.tiles_y = ceil_div(static_cast<size_t>(out_h), m);
  t.groups_x = ceil_div(ceil_div(static_cast<size_t>(out_w), m), kWinogradLanes);
  t.groups = t.tiles_y * t.groups_x;
  t.phase_rows = t.tiles_y * m + n - m;
  t.phase_len = t.groups_x * kWinogradLanes + (n - 1) / m + 1;
  t.phase_floats = channels * t.phase_rows * m * t.phase_len;
  return t;
}

}  // namespace

size_t Conv2d::winograd_tile() const {
  if (backend() != Backend::kAuto || !direct_capable() || kernel_h_ != kernel_w_ ||
      dense_weight().empty() || in_channels_ < 8)
    return 0;
  if (kernel_h_ == 3) return 4;
  if (kernel_h_ == 5) return 2;
  return 0;
}

size_t Conv2d::winograd_block_tiles() const {
  const size_t per_tile = kWinogradN * kWinogradN * sizeof(float) *
                          static_cast<size_t>(in_channels_ + rows());
  const size_t least = kernel_table(isa()).conv_dense_wide ? kConvDenseWideCols : kConvDenseCols;
  return std::max<size_t>(least, kWinogradBlockBytes / per_tile / 16 * 16);
}

std::shared_ptr<const Conv2d::Winograd> Conv2d::winograd() const {
  std::lock_guard<std::mutex> lock(winograd_mutex_);
  if (winograd_) return winograd_;
  auto w = std::make_shared<Winograd>();
  const size_t m = winograd_tile(), r = static_cast<size_t>(kernel_h_);
  const size_t n = m + r - 1;
  const ToomCook t = toom_cook(m, r);
  // The kernels have BT and AT written in (kernels.h): they must be these.
  bool same = n == kWinogradN;
  for (size_t i = 0; same && i < n; ++i)
    for (size_t j = 0; j < n; ++j) {
      same = same && kWinogradBT[i][j] == t.bt[i * n + j];
      if (i < m) same = same && (m == 2 ? kWinogradAT2[i][j] : kWinogradAT4[i][j]) == t.at[i * n + j];
    }
  if (!same) throw FormatError(describe("Winograd transform matrices differ from the kernels' (a bug)"));
  // U[xi][k][c] = (G g_kc GT)[xi] for xi = a * n + b.
  const size_t channels = static_cast<size_t>(in_channels_), outs = static_cast<size_t>(rows());
  w->u.resize(n * n * outs * channels);
  const float* dense = dense_weight().data();
  std::vector<double> gg(n * r);  // G g
  for (size_t k = 0; k < outs; ++k)
    for (size_t c = 0; c < channels; ++c) {
      const float* g = dense + k * static_cast<size_t>(cols()) + c * r * r;
      for (size_t a = 0; a < n; ++a)
        for (size_t j = 0; j < r; ++j) {
          double s = 0.0;
          for (size_t i = 0; i < r; ++i) s += t.g[a * r + i] * g[i * r + j];
          gg[a * r + j] = s;
        }
      for (size_t a = 0; a < n; ++a)
        for (size_t b = 0; b < n; ++b) {
          double s = 0.0;
          for (size_t j = 0; j < r; ++j) s += gg[a * r + j] * t.g[b * r + j];
          w->u[((a * n + b) * outs + k) * channels + c] = static_cast<float>(s);
        }
    }
  const size_t block = winograd_block_tiles();
  w->offsets.resize(channels);
  for (size_t c = 0; c < channels; ++c) w->offsets[c] = static_cast<uint32_t>(c * block);
  winograd_ = std::move(w);
  return winograd_;
}

void Conv2d::release_unchosen_winograd() const {
  {
    std::lock_guard<std::mutex> lock(winograd_mutex_);
    if (!winograd_) return;
  }
  if (has_chosen(Choice::kDenseWinograd)) return;
  std::lock_guard<std::mutex> lock(winograd_mutex_);
  winograd_.reset();  // a forward pass running it holds its own reference
}

size_t Conv2d::winograd_scratch_floats(int64_t out_h, int64_t out_w) const {
  const size_t channels = static_cast<size_t>(in_channels_);
  const Tiling t = tiling(winograd_tile(), kWinogradN, channels, out_h, out_w);
  const size_t block = winograd_block_tiles();
  return t.phase_floats + kWinogradN * kWinogradN * (winograd_stride(channels, block) +
                                                     winograd_stride(static_cast<size_t>(rows()), block));
}

void Conv2d::forward_winograd(const TensorView& in, const MutableTensorView& out,
                              const ForwardContext& ctx) const {
  const std::shared_ptr<const Winograd> wg = winograd();
  const KernelTable& kt = kernel_table(isa());
  const size_t m = winograd_tile(), n = kWinogradN, nn = n * n;
  const int64_t height = in.shape[1], width = in.shape[2];
  const int64_t out_h = out.shape[1], out_w = out.shape[2];
  const size_t channels = static_cast<size_t>(in_channels_), outs = static_cast<size_t>(rows());
  const Tiling t = tiling(m, n, channels, out_h, out_w);
  const size_t block = winograd_block_tiles(), block_groups = block / kWinogradLanes;
  const size_t blocks = ceil_div(t.groups, block_groups);
  const size_t in_stride = channels * static_cast<size_t>(height * width);
  const size_t plane = static_cast<size_t>(out_h * out_w);
  const float* bias_data = bias().empty() ? nullptr : bias().data();
  const bool relu = ctx.fuse_relu;
  const Epilogue none{nullptr, false};
  // A block's V[xi] (channels x block) and M[xi] (outs x block) are this far
  // apart: kWinogradPad floats past a multiple of 4 KiB, so that the 36 loads
  // or stores of one transform do not all fall in one L1 set.
  const size_t v_stride = winograd_stride(channels, block), m_stride = winograd_stride(outs, block);

  // phase[(c * phase_rows + row) * m + p][u] = the padded input at (row, u * m + p):
  // tile column x's input columns x * m + j lie at phase j % m, x + j / m.
  // Channels [c0, c1) of one image.
  const auto fill_phase = [&](const float* image, float* phase, size_t c0, size_t c1) {
    for (size_t c = c0; c < c1; ++c)
      for (size_t row = 0; row < t.phase_rows; ++row) {
        float* dst = phase + (c * t.phase_rows + row) * m * t.phase_len;
        const int64_t y = static_cast<int64_t>(row) - pad_h_;
        if (y < 0 || y >= height) {
          std::memset(dst, 0, sizeof(float) * m * t.phase_len);
          continue;
        }
        const float* src = image + (static_cast<int64_t>(c) * height + y) * width;
        for (size_t p = 0; p < m; ++p, dst += t.phase_len) {
          // u in [lo, hi) reads the row (x = u * m + p - pad_w in [0, width)); the rest is padding.
          const int64_t first = pad_w_ - static_cast<int64_t>(p);
          const size_t lo = std::min(t.phase_len, static_cast<size_t>(std::max<int64_t>(0, (first + static_cast<int64_t>(m) - 1) / static_cast<int64_t>(m))));
          const size_t hi = std::min(t.phase_len, static_cast<size_t>(std::max<int64_t>(
              0, (width + first + static_cast<int64_t>(m) - 1) / static_cast<int64_t>(m))));
          std::fill(dst, dst + lo, 0.0f);
          const float* from = src + (static_cast<int64_t>(lo * m) - first);
          for (size_t u = lo; u < hi; ++u, from += m) dst[u] = *from;
          std::fill(dst + std::max(lo, hi), dst + t.phase_len, 0.0f);
        }
      }
  };
  size_t phase_cols[kWinogradN];
  for (size_t j = 0; j < n; ++j) phase_cols[j] = (j % m) * t.phase_len + j / m;
  // Block b of `per` groups (at most block_groups: [g0, g1)) of one image: v
  // (nn x channels x block) and prod (nn x outs x block) are the worker's.
  const auto run_block = [&](const float* phase, float* v, float* prod, float* out_image, size_t b,
                             size_t per) {
    const size_t g0 = b * per, g1 = std::min(t.groups, g0 + per);
    for (size_t g = g0; g < g1; ++g) {
      const size_t ty = g / t.groups_x, gx = g % t.groups_x, lane0 = (g - g0) * kWinogradLanes;
      for (size_t c = 0; c < channels; ++c) {
        const float* rows_ptr[kWinogradN];
        for (size_t i = 0; i < n; ++i)
          rows_ptr[i] = phase + ((c * t.phase_rows + ty * m + i) * m) * t.phase_len + gx * kWinogradLanes;
        kt.winograd_input(rows_ptr, phase_cols, v + c * block + lane0, v_stride);
      }
    }
    const size_t tiles = (g1 - g0) * kWinogradLanes;
    for (size_t xi = 0; xi < nn; ++xi)
      for (size_t r0 = 0; r0 < outs; r0 += kConvDenseRows)
        for (size_t t0 = 0, cols = 0; t0 < tiles; t0 += cols) {
          const ConvDenseTile tile = conv_dense_tile(kt, tiles - t0);
          cols = std::min(tile.cols, tiles - t0);
          tile.kernel(wg->u.data() + (xi * outs + r0) * channels, channels,
                      std::min(kConvDenseRows, outs - r0), wg->offsets.data(), channels,
                      v + xi * v_stride + t0, cols, none, 0, prod + xi * m_stride + r0 * block + t0, block);
        }
    for (size_t g = g0; g < g1; ++g) {
      const size_t ty = g / t.groups_x, gx = g % t.groups_x, lane0 = (g - g0) * kWinogradLanes;
      const size_t y0 = ty * m, x0 = gx * kWinogradLanes * m;
      const size_t nrows = std::min(m, static_cast<size_t>(out_h) - y0);
      const size_t ncols = std::min(kWinogradLanes * m, static_cast<size_t>(out_w) - x0);
      for (size_t k = 0; k < outs; ++k)
        kt.winograd_output(prod + k * block + lane0, m_stride, m, bias_data ? bias_data[k] : 0.0f, relu,
                           out_image + k * plane + y0 * static_cast<size_t>(out_w) + x0,
                           static_cast<size_t>(out_w), nrows, ncols);
    }
  };
  const auto worker_scratch = [&](size_t worker) { return ctx.scratch + worker * ctx.scratch_per_worker; };
  const size_t vm_offset = t.phase_floats;  // a worker's scratch: phase | v | prod
  const size_t prod_offset = vm_offset + nn * v_stride;
  const auto whole_image = [&](size_t image, size_t worker) {
    float* s = worker_scratch(worker);
    fill_phase(in.data + image * in_stride, s, 0, channels);
    for (size_t b = 0; b < blocks; ++b)
      run_block(s, s + vm_offset, s + prod_offset, out.data + image * outs * plane, b, block_groups);
  };

  const size_t batch = static_cast<size_t>(in.batch);
  const size_t workers = ctx.num_workers;
  const double work = static_cast<double>(outs * static_cast<size_t>(cols())) * static_cast<double>(plane);
  if (ctx.pool == nullptr || workers <= 1 || work * static_cast<double>(batch) < kMinParallelWinogradWork) {
    for (size_t image = 0; image < batch; ++image) whole_image(image, 0);
    return;
  }
  if (batch >= workers) {
    ctx.pool->parallel_for(batch, [&](size_t image, size_t worker) { whole_image(image, worker); });
    return;
  }
  // Few images: one phase copy (worker 0's scratch), filled and then read by
  // all workers, in blocks small enough to give each worker one, while they
  // keep 2 groups (a 16-tile call): VGG's conv5_x at 14x14 is 4 groups, one
  // block of 32 tiles.
  const size_t per = std::min(block_groups, std::max<size_t>(2, ceil_div(t.groups, workers)));
  const size_t few_blocks = ceil_div(t.groups, per);
  for (size_t image = 0; image < batch; ++image) {
    float* phase = worker_scratch(0);
    const float* image_in = in.data + image * in_stride;
    if (t.phase_floats < kParallelPhaseFloats) {
      fill_phase(image_in, phase, 0, channels);
    } else {
      ctx.pool->parallel_for(workers, [&](size_t part, size_t) {
        fill_phase(image_in, phase, part * channels / workers, (part + 1) * channels / workers);
      });
    }
    float* out_image = out.data + image * outs * plane;
    ctx.pool->parallel_for(few_blocks, [&](size_t b, size_t worker) {
      float* s = worker_scratch(worker);
      run_block(phase, s + vm_offset, s + prod_offset, out_image, b, per);
    });
  }
}

}  // namespace sparsenet
