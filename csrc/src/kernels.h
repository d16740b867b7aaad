// The kernel registry: every CSR microkernel (per index width), the dense direct
// convolution tile, Winograd's transforms, the 2x2 max pool and the transpose,
// per ISA. Layers pick a KernelTable once at construction; tests and benchmarks
// reach each entry by ISA through kernel_table().
#pragma once

#include <cstddef>
#include <cstdint>

#include "sparsenet/runtime.h"

namespace sparsenet {

class ThreadPool;

template <typename Index>
struct CsrRef {
  const uint32_t* row_ptr;  // rows + 1
  const Index* col_idx;     // nnz
  const float* values;      // nnz
  // csrmm only: when set, row r's nonzeros are [row_ptr[r], row_end[r]) instead
  // of [row_ptr[r], row_ptr[r + 1]) -- one column panel of a CSR matrix, whose
  // per-row starts and ends are two rows of a panel table (direct convolution's
  // channel panels; fully connected panels are stored in walk order instead).
  const uint32_t* row_end = nullptr;
  // csrmm only, a hint: X is too large for L2, so software-prefetch the X rows
  // of upcoming nonzeros (the AVX2 kernel does; the result is the same).
  bool prefetch = false;
  // csrmv only, a hint: the nonzeros stream from memory, so prefetch them
  // ahead (the AVX2 kernels do; the result is the same). Cleared for matrices
  // that stay in the last-level cache (csrmv_stream_bytes()), where the
  // prefetches only take load slots.
  bool stream = true;
};

// Applied to each output element: y = relu ? max(acc + bias[row], 0) : acc + bias[row].
// csrmm with `accumulate` adds the products to what Y holds (acc starts at y).
struct Epilogue {
  const float* bias;  // one per row, or nullptr for none
  bool relu;
  bool accumulate = false;
};

// y[r] = epilogue(sum_k values[k] * x[col_idx[k]]) for r in [row_begin, row_end);
// with ep.accumulate the sum is added to what y[r] holds (column panels of a
// long x, see WeightedLayer::build_vector_panels).
template <typename Index>
using CsrmvKernel = void (*)(CsrRef<Index> a, const float* x, Epilogue ep, size_t row_begin,
                             size_t row_end, float* y);

// Y[r][c] = epilogue(sum_k values[k] * X[col_idx[k]][c]) for r in [row_begin, row_end),
// c in [col_begin, col_end); X and Y row-major with leading dimensions ldx, ldy.
// With ep.accumulate the sum starts from Y[r][c] (column panels, see CsrRef).
template <typename Index>
using CsrmmKernel = void (*)(CsrRef<Index> a, const float* x, size_t ldx, Epilogue ep,
                             size_t row_begin, size_t row_end, size_t col_begin,
                             size_t col_end, float* y, size_t ldy);

// Dense direct convolution's register tile: up to kConvDenseRows output
// channels x up to kConvDenseCols output columns (kConvDenseWideCols for
// KernelTable::conv_dense_wide). For r < m, j < n (m in [1, kConvDenseRows],
// n in [1, the tile's columns]):
//   y[r * ldy + j] = epilogue(sum_{i < k} w[r * ldw + i] * x[offsets[i] + j], row0 + r)
// with w the rows of a dense row-major weight and offsets[i] the place of weight
// column i in a padded input image, relative to the tile's first output column;
// ep.accumulate adds the sum to what y[r * ldy + j] holds (panels of weight
// columns, the epilogue's bias and ReLU given with the last panel only).
// Reads x[offsets[i] + j] for every j below the tile's columns whatever n
// is: the caller leaves kConvDenseWideCols floats readable past the last
// tile (their lanes are dropped).
constexpr size_t kConvDenseRows = 6;
constexpr size_t kConvDenseCols = 16;
constexpr size_t kConvDenseWideCols = 32;
using ConvDenseKernel = void (*)(const float* w, size_t ldw, size_t m, const uint32_t* offsets,
                                 size_t k, const float* x, size_t n, Epilogue ep, size_t row0,
                                 float* y, size_t ldy);

// Max pooling over 2x2 windows at stride 2, one output row: for i < n,
//   d[i] = max(max(max(max(-inf, top[2i]), top[2i + 1]), top[w + 2i]), top[w + 2i + 1])
// with max(a, b) = a < b ? b : a (std::max), so both ISAs treat NaN and -0 alike.
using MaxPool2x2Kernel = void (*)(const float* top, size_t w, size_t n, float* d);

// Winograd convolution F(m x m, r x r) (Lavin & Gray, CVPR 2016) on 6 x 6
// input tiles: F(4x4, 3x3) and F(2x2, 5x5), kWinogradLanes tiles at once, one
// per lane. The matrices are Toom-Cook's at the points 0, 1, -1, 2, -2 and
// infinity (winograd.cc derives them and checks they equal these; the AVX2
// kernels have them written out as adds and multiply-adds).
constexpr size_t kWinogradLanes = 8;
constexpr size_t kWinogradN = 6;
constexpr float kWinogradBT[6][6] = {{4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
                                     {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
constexpr float kWinogradAT4[4][6] = {{1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0},
                                      {0, 1, -1, 8, -8, 1}};
constexpr float kWinogradAT2[2][6] = {{1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 1}};
// Input: V[a][b] = sum_ij BT[a][i] d[i][j] BT[b][j] (V = BT d B), where
// d[i][j] of the lanes is the kWinogradLanes floats at rows[i] + cols[j] (the
// tiles' input, m floats apart, stored phase by phase so that they are
// contiguous); V[a][b] goes to v + (a * 6 + b) * ldv.
using WinogradInputKernel = void (*)(const float* const* rows, const size_t* cols, float* v,
                                     size_t ldv);
// Output, m = 2 or 4: Y[a][b] = act(sum_ij AT[a][i] M[i][j] AT[b][j] + bias)
// (Y = AT M A), M[i][j] of the lanes at mm + (i * 6 + j) * ldm; lane l's
// Y[a][b] is y[a * ldy + l * m + b], stored for a < rows and l * m + b < cols.
using WinogradOutputKernel = void (*)(const float* mm, size_t ldm, size_t m, float bias, bool relu,
                                      float* y, size_t ldy, size_t rows, size_t cols);

// out[c * ldo + r] = in[r * ldi + c] for r < rows, c < cols (between the
// model's sample-major and feature-major layouts, see transpose_matrix). A
// copy: every ISA gives the same bits.
using TransposeKernel = void (*)(const float* in, size_t ldi, size_t rows, size_t cols, float* out,
                                 size_t ldo);
// Both kernels go in blocks of kTransposeBlockRows input rows by
// transpose_block_cols(ldo) input columns, the output rows written at once:
// 8 where they lie 4 KiB or more apart (one L1 set, 12 ways on Zen 5), else
// 32 (measurements in f32_transpose_avx2.cc).
constexpr size_t kTransposeBlockRows = 128;
inline size_t transpose_block_cols(size_t ldo) { return ldo >= 1024 ? 8 : 32; }

#define SPARSENET_DECLARE_KERNELS(isa)                                                        \
  void f32_csrmv_u16_##isa(CsrRef<uint16_t>, const float*, Epilogue, size_t, size_t, float*); \
  void f32_csrmv_u32_##isa(CsrRef<uint32_t>, const float*, Epilogue, size_t, size_t, float*); \
  void f32_csrmm_u16_##isa(CsrRef<uint16_t>, const float*, size_t, Epilogue, size_t, size_t,  \
                           size_t, size_t, float*, size_t);                                   \
  void f32_csrmm_u32_##isa(CsrRef<uint32_t>, const float*, size_t, Epilogue, size_t, size_t,  \
                           size_t, size_t, float*, size_t);                                   \
  void f32_conv_dense_##isa(const float*, size_t, size_t, const uint32_t*, size_t, const float*, \
                            size_t, Epilogue, size_t, float*, size_t);                         \
  void f32_maxpool2x2_##isa(const float*, size_t, size_t, float*);                            \
  void f32_winograd_input_##isa(const float* const*, const size_t*, float*, size_t);           \
  void f32_winograd_output_##isa(const float*, size_t, size_t, float, bool, float*, size_t,     \
                                 size_t, size_t);                                             \
  void f32_transpose_##isa(const float*, size_t, size_t, size_t, float*, size_t);

SPARSENET_DECLARE_KERNELS(scalar)
SPARSENET_DECLARE_KERNELS(avx2)
#undef SPARSENET_DECLARE_KERNELS
void f32_csrmv_u16_l1_avx2(CsrRef<uint16_t>, const float*, Epilogue, size_t, size_t, float*);
// The same with AVX-512F+VL (masked broadcasts): the avx2 table's csrmv_u16_l1
// where avx512_kernels_enabled() (see KernelTable).
void f32_csrmv_u16_l1_avx512(CsrRef<uint16_t>, const float*, Epilogue, size_t, size_t, float*);
// CSR x dense in 16-lane registers (AVX-512F): the avx2 table's csrmm_u16 and
// csrmm_u32 where avx512_kernels_enabled().
void f32_csrmm_u16_avx512(CsrRef<uint16_t>, const float*, size_t, Epilogue, size_t, size_t, size_t, size_t,
                          float*, size_t);
void f32_csrmm_u32_avx512(CsrRef<uint32_t>, const float*, size_t, Epilogue, size_t, size_t, size_t, size_t,
                          float*, size_t);
// The dense direct convolution tile 32 columns wide (AVX-512F): the avx2
// table's conv_dense_wide where avx512_kernels_enabled().
void f32_conv_dense_avx512(const float*, size_t, size_t, const uint32_t*, size_t, const float*, size_t,
                           Epilogue, size_t, float*, size_t);
bool cpu_has_avx512vl();
// Whether the avx2 table takes its AVX-512 kernels: cpu_has_avx512vl(), unless
// the environment says SPARSENET_AVX512=0 (read once per process) to run the
// AVX2 kernels alone, as on a CPU without AVX-512.
bool avx512_kernels_enabled();
// `iterations` rounds of 12 independent FMAs on registers, of 16 lanes or 8,
// for the caller to time (f32_fma_rate_avx512.cc; AVX-512F CPUs only);
// returns one lane of the result.
float f32_fma_chains_avx512(size_t lanes, long iterations);
// Whether this CPU's 512-bit FMAs run at the rate of its 256-bit ones (two
// full-width FMA pipes, as Zen 5 has, where Zen 4 splits each in two halves):
// measured once per process where avx512_kernels_enabled() (about 0.2 ms),
// else false.
bool cpu_full_width_avx512();

// Direct convolution of 3-wide kernels with aligned loads (f32_conv3_avx512.cc,
// f32_conv3_avx2.cc). A row's nonzeros come as entries, each one kernel row
// (c, i) of the row's weights: offsets[e], the place of its input run (the
// kernel column j left out), and one weight per kernel column j it holds, in
// order of j. Row r's entries come in kConv3Groups groups by the columns they
// hold: {0}, {1}, {2}, {0, 1}, {0, 2}, {1, 2}, {0, 1, 2}, group g the entries
// [groups[g * stride + r], groups[(g + 1) * stride + r]) (slots 0..7), their
// weights from values[groups[8 * stride + r]] on, group after group, entry
// after entry (1, 1, 1, 2, 2, 2 or 3 each). An entry that holds several
// columns loads its run once for all of them; a kernel that cannot share the
// load (the AVX2 one) is given one-column entries only
// (KernelTable::conv3_joint_entries), but runs any. For rows r in
// [row_begin, row_end) and each tile of 64 positions [c0, c0 + 64) from
// col_begin to col_end, with z_j[q] = sum over the entries e holding column j
// of their weight for j times x[offsets[e] + q] for q in that tile only:
//   Y[r][p] (+)= z_0[p] + z_1[p + 1] + z_2[p + 2]   for p in [c0 - 2, min(c0 + 64, col_end))
// (Y[r][p] at y[r * ldy + p]). Positions c0 - 2 and c0 - 1 always add (the
// tile before began them; y needs room for two floats before col_begin), the
// others only with ep.accumulate. The epilogue applies to positions below
// c0 + 62, whose sums are whole once the tile's last panel is in. Reads
// x[offsets[e] + q] for every q of a tile, past col_end too.
// With period W > 0, x holds rows of W floats without padding columns (a
// 3-wide kernel with one column of padding each side): z_0 leaves out the q
// with (q + 1) % W == 0 and z_2 the q with q % W == 0, the neighbours that lie
// past a row's ends (q counted from x; x starts a row). Position p is then
// column (p + 1) % W. A kernel without KernelTable::conv3_periodic runs it
// the slow way.
constexpr size_t kConv3Groups = 7;
constexpr size_t kConv3Slots = kConv3Groups + 2;  // the groups' bounds and the first weight
// The kernel columns group g holds (bit j for column j), and its weights per entry.
constexpr unsigned kConv3Columns[kConv3Groups] = {1, 2, 4, 3, 5, 6, 7};
constexpr uint32_t kConv3Width[kConv3Groups] = {1, 1, 1, 2, 2, 2, 3};
using Conv3Kernel = void (*)(const float* values, const uint32_t* offsets, const uint32_t* groups,
                             size_t stride, const float* x, Epilogue ep, size_t row_begin,
                             size_t row_end, size_t col_begin, size_t col_end, float* y, size_t ldy,
                             size_t period);
void f32_conv3_avx512(const float*, const uint32_t*, const uint32_t*, size_t, const float*, Epilogue,
                      size_t, size_t, size_t, size_t, float*, size_t, size_t);
void f32_conv3_avx2(const float*, const uint32_t*, const uint32_t*, size_t, const float*, Epilogue,
                    size_t, size_t, size_t, size_t, float*, size_t, size_t);
void f32_conv3_scalar(const float*, const uint32_t*, const uint32_t*, size_t, const float*, Epilogue,
                      size_t, size_t, size_t, size_t, float*, size_t, size_t);  // the reference (tests)

// Sliced windows, the batch-1 product (y = W x) on AVX-512 (sell.h builds the
// layout, SellLayout; WeightedLayer::build_sell says which layers). Rows go in
// groups of kSellLanes, one lane per row; group g's steps are
// [group_start[g], group_start[g + 1]). Step s gives lane l the product
// values[s * kSellLanes + l] * x[window[s] + index[s * kSellLanes + l]], with
// index < kSellWindow: every lane's column lies in the step's window of
// kSellWindow columns (a lane with no nonzero there has value 0, index 0).
// So one step is one vector of values, one of byte indices, two loads of x
// (the window) and one two-table permute, for up to 16 nonzeros, against one
// load per nonzero for csrmv. Lanes past the last row hold zeros.
constexpr size_t kSellLanes = 16;
constexpr size_t kSellWindow = 32;
struct SellRef {
  const uint32_t* group_start;  // groups + 1
  const uint32_t* window;       // steps: first column of each step's window
  const uint8_t* index;         // steps * kSellLanes
  const float* values;          // steps * kSellLanes
  // A hint, as CsrRef::stream: the layout streams from memory, so prefetch
  // it kSellStreamAhead steps ahead (the result is the same).
  bool stream = false;
};
constexpr size_t kSellStreamAhead = 128;  // steps: 8 KiB of values
// y[r] = epilogue(sum of row r's products) for r in [row_begin, row_end) (any
// range; whole groups are computed, and rows outside it are not stored). Per
// lane, step j of a group adds into chain j % 4 while four steps remain, the
// rest into chain 0; the sum is (c0 + c2) + (c1 + c3), then y[r] when
// ep.accumulate, then the epilogue. Every kernel keeps this order (fused
// multiply-adds), so all give the same sums bit for bit.
using SellmvKernel = void (*)(SellRef a, const float* x, Epilogue ep, size_t row_begin,
                              size_t row_end, float* y);
void f32_sellmv_scalar(SellRef, const float*, Epilogue, size_t, size_t, float*);  // the reference
void f32_sellmv_avx512(SellRef, const float*, Epilogue, size_t, size_t, float*);

struct KernelTable {
  Isa isa;
  CsrmvKernel<uint16_t> csrmv_u16;
  CsrmvKernel<uint32_t> csrmv_u32;
  // csrmv_u16 fetching x with scalar loads instead of gathers (identical sums):
  // faster on some cores when x sits in L1, see csrmv_l1_loads_win(): layers
  // whose x fits L1, and vector panels. Where the CPU has AVX-512F+VL, the
  // masked-broadcast kernel, also for vector panels whose matrix streams from
  // memory (Zen 4, bench/ab.py, alternating processes, against the AVX2
  // insertps kernel: with the matrix in cache 6-9 % faster; fc6 at 10 % 1.12x
  // and 1.14x on two threads in two runs, 1.02x on one; at 4 % 0.95-1.20x).
  CsrmvKernel<uint16_t> csrmv_u16_l1;
  // CSR x dense: in the avx2 table the AVX-512 kernels where
  // avx512_kernels_enabled() (f32_csrmm_avx512.cc), else the AVX2 ones.
  CsrmmKernel<uint16_t> csrmm_u16;
  CsrmmKernel<uint32_t> csrmm_u32;
  ConvDenseKernel conv_dense;
  MaxPool2x2Kernel maxpool2x2;
  WinogradInputKernel winograd_input;
  WinogradOutputKernel winograd_output;
  TransposeKernel transpose;
  // Direct convolution of 3-wide kernels: in the avx2 table the AVX-512 kernel
  // where avx512_kernels_enabled(), else the AVX2 one; none in the scalar
  // table (Conv2d uses csrmm there). conv3_joint_entries: whether conv3 is
  // given a kernel row's nonzeros as one entry (the AVX-512 kernel) or one
  // entry per nonzero (the AVX2 kernel, whose groups share registers);
  // conv3_periodic: whether it runs images without padding columns (period >
  // 0) at full speed (the AVX-512 kernel, which masks z_0 and z_2 apart);
  // conv3_double_tiles: whether it computes two tiles at once where a call
  // spans more than one (the AVX-512 kernel: 128 positions in 24 zmm
  // accumulators), so that Conv2d may hand it 128 positions per call.
  Conv3Kernel conv3 = nullptr;
  bool conv3_joint_entries = false;
  bool conv3_periodic = false;
  bool conv3_double_tiles = false;
  // Sliced windows (SellRef): the AVX-512 kernel in the avx2 table where
  // avx512_kernels_enabled(), none otherwise (AVX2 has no two-table permute)
  // and none in the scalar table (f32_sellmv_scalar is the tests' reference).
  SellmvKernel sellmv = nullptr;
  // Dense direct convolution's tile kConvDenseWideCols wide: the AVX-512
  // kernel in the avx2 table where avx512_kernels_enabled(), none otherwise
  // (see conv_dense_tile).
  ConvDenseKernel conv_dense_wide = nullptr;
};

// The table for `isa`; throws FormatError for avx2 on a CPU without AVX2+FMA.
const KernelTable& kernel_table(Isa isa);

// The dense tile for a row of output whose next `left` columns are to be
// computed: the wide one where the table has it and more than kConvDenseCols
// columns are left, else the narrow one, so that a row's last tile computes
// few lanes past its end (on a CPU that splits 512-bit FMAs in two, Zen 4, a
// wide tile over 16 columns would cost twice the narrow one).
struct ConvDenseTile {
  ConvDenseKernel kernel;
  size_t cols;
};
inline ConvDenseTile conv_dense_tile(const KernelTable& t, size_t left) {
  if (t.conv_dense_wide != nullptr && left > kConvDenseCols) return {t.conv_dense_wide, kConvDenseWideCols};
  return {t.conv_dense, kConvDenseCols};
}

// out (cols x rows) = the transpose of in (rows x cols), both row-major, with
// table.transpose: split into bands of whole blocks over the pool's workers
// when the matrix is large (pool may be null: one thread).
void transpose_matrix(const KernelTable& table, const float* in, size_t rows, size_t cols, float* out,
                      ThreadPool* pool, size_t workers);

// Vectors of at most this many floats (24 KiB) count as L1-resident for csrmv.
constexpr size_t kL1VectorFloats = 6144;

// Whether the avx2 table's csrmv_u16_l1 beats csrmv_u16 on this CPU for an
// L1-resident x: measured once per process on a synthetic 10 %-dense 256x4096
// matrix (about 1 ms; gathers are slow on AMD Zen, fast on recent Intel cores).
bool csrmv_l1_loads_win();

// Whether the avx2 table's sellmv beats its csrmv_u16_l1 on this CPU, for a
// matrix in cache: measured once per process on the same synthetic matrix
// (false where the table has no sellmv).
bool sellmv_win();

// The last-level cache's size in bytes as Linux's sysfs lists it for CPU 0,
// else as the C library reports it (L3, else L2); 0 where unknown. A matrix
// whose nonzeros (values and indices) take more than csrmv_stream_bytes(),
// half of it, counts as streaming from memory
// (CsrRef::stream): the cache is shared with other layers, other cores and, on
// a cloud host, other guests.
size_t last_level_cache_bytes();
size_t csrmv_stream_bytes();

inline float apply_epilogue(float acc, Epilogue ep, size_t row) {
  if (ep.bias) acc += ep.bias[row];
  return (ep.relu && acc < 0.0f) ? 0.0f : acc;
}

}  // namespace sparsenet
