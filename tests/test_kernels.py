"""Every CSR microkernel (csrmv / csrmm, 16- and 32-bit indices, scalar and AVX2)
against NumPy, and AVX2 against its scalar twin, on edge shapes."""

from __future__ import annotations

import numpy as np
import pytest

import sparsenet
from sparsenet import FormatError, ShapeError, WeightError, _core

from conftest import HAS_AVX2, ISAS, csr_arrays, needs_avx2, ref_conv2d, sparse_dense_array

MARKER = np.float32(-12345.0)
INDEX_BITS = [16, 32]
RTOL = 1e-5
needs_avx512 = pytest.mark.skipif(not _core.cpu_has_avx512vl(), reason="this CPU lacks AVX-512F+VL")


def run_kernel(isa, dense, x, bias=None, relu=False, index_bits=16, indptr=None, indices=None, data=None,
               **ranges):
    rows, cols = dense.shape
    if indptr is None:
        indptr, indices, data = csr_arrays(dense)
    return _core._raw_csr_kernel(isa, rows, cols, indptr, indices, data, x, bias=bias, relu=relu,
                                 index_bits=index_bits, **ranges)


def reference(dense, x, bias=None, relu=False):
    y = dense.astype(np.float64) @ x.astype(np.float64)
    if bias is not None:
        y = (y.T + bias.astype(np.float64)).T
    return np.maximum(y, 0.0) if relu else y


def check(actual, expected):
    """Relative agreement scaled by the magnitude of the summed terms."""
    assert actual.dtype == np.float32
    assert actual.shape == expected.shape
    scale = max(float(np.abs(expected).max()) if expected.size else 0.0, 1.0)
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=RTOL * scale)


def every_row_length(rng, rows, cols):
    """A (rows, cols) matrix whose row r holds exactly r nonzeros (never 0): every
    tail of the kernels' 16/8-wide and even/odd loops, rows up to cols."""
    dense = np.zeros((rows, cols), np.float32)
    for r in range(rows):
        columns = rng.choice(cols, size=r, replace=False)
        dense[r, columns] = rng.standard_normal(r) + 3.0
    return dense


def make_x(rng, cols, n):
    shape = (cols,) if n is None else (cols, n)
    return rng.standard_normal(shape).astype(np.float32)


# ------------------------------------------------------------------ csrmv
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("index_bits", INDEX_BITS)
@pytest.mark.parametrize("density", [1.0, 0.5, 0.01])
@pytest.mark.parametrize("rows,cols", [(1, 1), (7, 13), (33, 100), (64, 257), (5, 2000)])
@pytest.mark.parametrize("epilogue", ["none", "bias", "bias+relu", "relu"])
def test_csrmv_matches_numpy(rng, isa, index_bits, density, rows, cols, epilogue):
    dense = sparse_dense_array((rows, cols), density, rng)
    x = make_x(rng, cols, None)
    bias = rng.standard_normal(rows).astype(np.float32) if "bias" in epilogue else None
    relu = "relu" in epilogue
    y = run_kernel(isa, dense, x, bias, relu, index_bits)
    check(y, reference(dense, x, bias, relu))
    if relu:
        assert (y >= 0).all()


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("index_bits", INDEX_BITS)
@pytest.mark.parametrize("n", [None, 1, 3, 7, 8, 9, 31, 32, 33, 65])
def test_row_nnz_tails(rng, isa, index_bits, n):
    """Row r holds exactly r nonzeros (0..49): every tail of the 16/8-wide
    gather loop and of the even/odd accumulator pairs."""
    rows, cols = 50, 61
    dense = every_row_length(rng, rows, cols)
    x = make_x(rng, cols, n)
    bias = rng.standard_normal(rows).astype(np.float32)
    y = run_kernel(isa, dense, x, bias, False, index_bits)
    check(y, reference(dense, x, bias))


# ------------------------------------------------------------------ csrmm
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("index_bits", INDEX_BITS)
@pytest.mark.parametrize("n", [1, 3, 7, 8, 9, 31, 32, 33, 64, 65, 107, 128])  # 107 = 64 + 32 + 8 + 3
@pytest.mark.parametrize("density", [1.0, 0.5, 0.01])
def test_csrmm_matches_numpy(rng, isa, index_bits, n, density):
    rows, cols = 23, 45
    dense = sparse_dense_array((rows, cols), density, rng)
    x = make_x(rng, cols, n)
    bias = rng.standard_normal(rows).astype(np.float32)
    check(run_kernel(isa, dense, x, bias, False, index_bits), reference(dense, x, bias))
    check(run_kernel(isa, dense, x, None, True, index_bits), reference(dense, x, None, True))


# The avx2 table's csrmm kernels by name: AVX2, and AVX-512 (16-lane tiles of
# 128, 64, 32 and 16 columns, then a masked one) where the CPU has it.
CSRMM_VARIANTS = [pytest.param("avx2", marks=needs_avx2), pytest.param("avx512", marks=[needs_avx2, needs_avx512])]


@pytest.mark.parametrize("variant", CSRMM_VARIANTS)
@pytest.mark.parametrize("index_bits", INDEX_BITS)
@pytest.mark.parametrize("n", [1, 2, 4, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 48, 63, 64, 65, 100, 127, 128, 129, 200, 259])
@pytest.mark.parametrize("prefetch", [False, True])
def test_csrmm_variants_match_numpy(rng, variant, index_bits, n, prefetch):
    """Every tile width and tail, row and column ranges, a column window
    accumulating into y, bias and ReLU; prefetching changes nothing."""
    rows, cols = 37, 300
    dense = sparse_dense_array((rows, cols), 0.15, rng)
    dense[5] = 0  # an empty row
    dense[6, :] = rng.standard_normal(cols)  # a full one
    x = make_x(rng, cols, n)
    bias = rng.standard_normal(rows).astype(np.float32)
    got = run_kernel("avx2", dense, x, bias, True, index_bits, mm_variant=variant, prefetch=prefetch)
    check(got, reference(dense, x, bias, True))
    y0 = rng.standard_normal((rows, n)).astype(np.float32)
    c0, c1 = min(3, n - 1), n
    got = run_kernel("avx2", dense, x, index_bits=index_bits, mm_variant=variant, prefetch=prefetch, y_init=y0,
                     column_window=(40, 260), row_begin=2, row_end=35, col_begin=c0, col_end=c1)
    expected = y0.astype(np.float64).copy()
    expected[2:35, c0:c1] += reference(dense[2:35, 40:260], x[40:260, c0:c1])
    check(got, expected)


def test_csrmm_variant_names_are_checked(rng):
    dense = sparse_dense_array((4, 8), 0.5, rng)
    x = make_x(rng, 8, 3)
    with pytest.raises(FormatError, match="mm_variant 'avx3' is not one of"):
        run_kernel("avx2" if HAS_AVX2 else "scalar", dense, x, mm_variant="avx3")
    with pytest.raises(FormatError, match="mm_variant"):
        run_kernel("scalar", dense, x, mm_variant="avx2")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("index_bits", INDEX_BITS)
@pytest.mark.parametrize("n", [None, 5, 40])
def test_empty_rows(rng, isa, index_bits, n):
    """Rows without nonzeros give bias (after ReLU) or exactly 0."""
    dense = sparse_dense_array((12, 30), 0.5, rng)
    empty = [0, 3, 4, 11]
    dense[empty] = 0
    x = make_x(rng, 30, n)
    bias = rng.standard_normal(12).astype(np.float32)
    y = run_kernel(isa, dense, x, bias, True, index_bits)
    check(y, reference(dense, x, bias, True))
    assert np.array_equal(y[empty], reference(dense, x, bias, True)[empty].astype(np.float32))
    y = run_kernel(isa, dense, x, None, False, index_bits)
    assert not y[empty].any()


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("index_bits", INDEX_BITS)
@pytest.mark.parametrize("n", [None, 1, 9, 33])
def test_no_nonzeros(rng, isa, index_bits, n):
    dense = np.zeros((9, 17), np.float32)
    x = make_x(rng, 17, n)
    bias = rng.standard_normal(9).astype(np.float32)
    y = run_kernel(isa, dense, x, bias, False, index_bits)
    expected = bias if n is None else np.repeat(bias[:, None], n, axis=1)
    assert np.array_equal(y, expected)
    assert not run_kernel(isa, dense, x, None, False, index_bits).any()


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n", [None, 4])
def test_zero_rows_and_zero_columns(isa, n):
    x = np.zeros((0,) if n is None else (0, n), np.float32)
    bias = np.array([1.5, -2.0, 0.25], np.float32)
    y = _core._raw_csr_kernel(isa, 3, 0, np.zeros(4, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32),
                              x, bias=bias, relu=True)
    expected = np.maximum(bias, 0) if n is None else np.repeat(np.maximum(bias, 0)[:, None], n, axis=1)
    assert np.array_equal(y, expected)
    x = np.ones((5,) if n is None else (5, n), np.float32)
    y = _core._raw_csr_kernel(isa, 0, 5, np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), x)
    assert y.shape == ((0,) if n is None else (0, n))


# ------------------------------------------------- sellmv (sliced windows)
# The AVX-512 kernel and the scalar reference on the layout build_sell makes.
SELL_KERNELS = [pytest.param("scalar", id="scalar"), pytest.param("avx512", id="avx512", marks=needs_avx512)]


def run_sell(kernel, dense, x, bias=None, relu=False, **kwargs):
    rows, cols = dense.shape
    indptr, indices, data = csr_arrays(dense)
    return _core._raw_sell_kernel(kernel, rows, cols, indptr, indices, data, x, bias=bias, relu=relu, **kwargs)


@pytest.mark.parametrize("kernel", SELL_KERNELS)
@pytest.mark.parametrize("rows,cols,density", [(1, 32, 1.0), (16, 32, 0.5), (17, 33, 0.3), (33, 100, 0.1),
                                               (70, 257, 0.05), (5, 2000, 0.01), (40, 70000, 0.002)])
@pytest.mark.parametrize("epilogue", ["none", "bias+relu"])
def test_sellmv_matches_numpy(rng, kernel, rows, cols, density, epilogue):
    dense = sparse_dense_array((rows, cols), density, rng)
    x = make_x(rng, cols, None)
    bias = rng.standard_normal(rows).astype(np.float32) if epilogue != "none" else None
    y, steps = run_sell(kernel, dense, x, bias, epilogue == "bias+relu")
    check(y, reference(dense, x, bias, epilogue == "bias+relu"))
    assert steps <= np.count_nonzero(dense)  # every step holds a nonzero


@needs_avx512
@pytest.mark.parametrize("row_range", [(0, 45), (3, 29), (16, 32), (5, 6), (7, 7), (44, 45)])
@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("stream", [False, True])
def test_sellmv_avx512_is_the_reference_bit_for_bit(rng, row_range, accumulate, stream):
    # Row r has r nonzeros: every tail of the four-step loop, in one group or across two.
    dense = every_row_length(rng, 45, 64)
    x = make_x(rng, 64, None)
    bias = rng.standard_normal(45).astype(np.float32)
    y_init = rng.standard_normal(45).astype(np.float32) if accumulate else None
    lo, hi = row_range
    kwargs = dict(bias=bias, relu=True, row_begin=lo, row_end=hi, y_init=y_init)
    fast, _ = run_sell("avx512", dense, x, stream=stream, **kwargs)
    slow, _ = run_sell("scalar", dense, x, **kwargs)
    np.testing.assert_array_equal(fast, slow)
    untouched = np.r_[0:lo, hi:45]
    np.testing.assert_array_equal(fast[untouched], MARKER if y_init is None else y_init[untouched])
    expected = reference(dense, x) + bias
    if accumulate:
        expected += y_init
    check(fast[lo:hi], np.maximum(expected, 0.0)[lo:hi])


@pytest.mark.parametrize("kernel", SELL_KERNELS)
def test_sellmv_windows(rng, kernel):
    # A dense 16 x 32 block is 32 full steps; nonzeros 40 columns apart in
    # every row need a window each; the last columns shift their window left.
    y, steps = run_sell(kernel, np.ones((16, 32), np.float32), np.ones(32, np.float32))
    assert steps == 32 and np.all(y == 32.0)
    dense = np.zeros((16, 200), np.float32)
    dense[:, ::40] = 1.0
    x = make_x(rng, 200, None)
    y, steps = run_sell(kernel, dense, x)
    assert steps == 5
    check(y, reference(dense, x))
    dense = np.zeros((3, 100), np.float32)
    dense[:, 99] = 2.0
    dense[1, 70] = 1.0
    y, steps = run_sell(kernel, dense, x[:100])
    assert steps == 2  # both windows [68, 100): row 1 takes 70, then 99; the others 99 in the first
    check(y, reference(dense, x[:100]))


def test_sellmv_needs_32_columns(rng):
    with pytest.raises(ShapeError, match="32 columns"):
        run_sell("scalar", np.ones((4, 31), np.float32), np.ones(31, np.float32))
    with pytest.raises(FormatError, match="avx512"):
        run_sell("avx2", np.ones((4, 32), np.float32), np.ones(32, np.float32))


# ------------------------------------------------- csrmv_u16_l1 (x by loads)
# (isa, l1_variant): the table's kernel for each ISA, and on AVX2 both x-by-loads
# variants by name (insertps; AVX-512VL masked broadcasts where the CPU has them).
def l1_variant_params():
    return [pytest.param("scalar", "", id="scalar-table"),
            pytest.param("avx2", "", id="avx2-table", marks=needs_avx2),
            pytest.param("avx2", "avx2", id="avx2-avx2", marks=needs_avx2),
            pytest.param("avx2", "avx512", id="avx2-avx512", marks=[needs_avx2, needs_avx512])]


@pytest.mark.parametrize("isa, l1_variant", l1_variant_params())
@pytest.mark.parametrize("epilogue", ["none", "bias+relu"])
@pytest.mark.parametrize("row_range", [(0, 50), (7, 31)])
def test_csrmv_x_loads_is_the_gather_kernel_bit_for_bit(rng, isa, l1_variant, epilogue, row_range):
    """csrmv_u16_l1 fetches x with scalar loads instead of gathers into the same
    lanes: every row length 0..49 (all 16/8/scalar tails) gives the same bits."""
    rows, cols = 50, 300
    dense = every_row_length(rng, rows, cols)
    x = make_x(rng, cols, None)
    bias = rng.standard_normal(rows).astype(np.float32) if "bias" in epilogue else None
    relu = "relu" in epilogue
    row_begin, row_end = row_range
    gathered = run_kernel(isa, dense, x, bias, relu, row_begin=row_begin, row_end=row_end)
    loaded = run_kernel(isa, dense, x, bias, relu, row_begin=row_begin, row_end=row_end, x_loads=True,
                        l1_variant=l1_variant)
    np.testing.assert_array_equal(loaded, gathered)
    inside = slice(row_begin, row_end)
    check(loaded[inside], reference(dense, x, bias, relu)[inside])
    assert (np.delete(loaded, np.arange(row_begin, row_end)) == MARKER).all()


@pytest.mark.parametrize("isa, l1_variant", l1_variant_params())
@pytest.mark.parametrize("index_bits", INDEX_BITS)
@pytest.mark.parametrize("x_loads", [False, True])
@pytest.mark.parametrize("epilogue", ["none", "bias+relu"])
def test_csrmv_accumulates_into_y(rng, isa, l1_variant, index_bits, x_loads, epilogue):
    """With y_init, csrmv adds every row's sum (all tails: row lengths 0..49) to
    what y holds, then the bias and ReLU (a long x's vector panels)."""
    if x_loads and index_bits == 32:
        pytest.skip("x_loads is a 16-bit kernel")
    if l1_variant and not x_loads:
        pytest.skip("l1_variant names an x_loads kernel")
    rows, cols = 50, 300
    dense = every_row_length(rng, rows, cols)
    x = make_x(rng, cols, None)
    y0 = rng.standard_normal(rows).astype(np.float32)
    bias = rng.standard_normal(rows).astype(np.float32) if epilogue != "none" else None
    relu = epilogue == "bias+relu"
    actual = run_kernel(isa, dense, x, bias, relu, index_bits=index_bits, y_init=y0, x_loads=x_loads,
                        l1_variant=l1_variant, row_begin=3, row_end=47)
    expected = y0.astype(np.float64) + reference(dense, x, bias)
    expected = np.maximum(expected, 0.0) if relu else expected
    check(actual[3:47], expected[3:47])
    np.testing.assert_array_equal(actual[:3], y0[:3])  # rows outside the range keep y
    np.testing.assert_array_equal(actual[47:], y0[47:])


@pytest.mark.parametrize("isa, l1_variant", l1_variant_params())
@pytest.mark.parametrize("index_bits, x_loads", [(16, False), (32, False), (16, True)])
def test_csrmv_stream_hint_changes_no_bits(rng, isa, l1_variant, index_bits, x_loads):
    """CsrRef::stream only adds prefetches of the nonzeros (kStreamAhead = 1024
    ahead): on a matrix long enough for them to run (about 29,000 nonzeros,
    rows of every tail length), both settings give the same bits, right
    against float64, over a row range."""
    if l1_variant and not x_loads:
        pytest.skip("l1_variant names an x_loads kernel")
    rows, cols = 96, 3000
    dense = sparse_dense_array((rows, cols), 0.1, rng)
    dense[np.arange(rows), rng.integers(0, cols, rows)] = 1.0  # no empty row
    x = make_x(rng, cols, None)
    bias = rng.standard_normal(rows).astype(np.float32)
    run = lambda stream: run_kernel(isa, dense, x, bias, True, index_bits=index_bits, x_loads=x_loads,
                                    l1_variant=l1_variant, row_begin=5, row_end=90, stream=stream)
    streamed = run(True)
    np.testing.assert_array_equal(run(False), streamed)
    check(streamed[5:90], reference(dense, x, bias, True)[5:90])
    assert (streamed[:5] == MARKER).all() and (streamed[90:] == MARKER).all()


@pytest.mark.parametrize("isa, l1_variant", l1_variant_params())
def test_csrmv_x_loads_reads_the_last_columns(rng, isa, l1_variant):
    """Indices up to 65535 (the widest x a 16-bit index reaches)."""
    cols = 65536
    dense = np.zeros((3, cols), np.float32)
    dense[:, -20:] = rng.standard_normal((3, 20))
    dense[1, :17] = 1.0
    x = make_x(rng, cols, None)
    check(run_kernel(isa, dense, x, x_loads=True, l1_variant=l1_variant), reference(dense, x))


def test_csrmv_x_loads_is_for_16_bit_csrmv_only(rng):
    dense = sparse_dense_array((4, 6), 0.5, rng)
    with pytest.raises(ShapeError, match="x_loads"):
        run_kernel("scalar", dense, make_x(rng, 6, 2), x_loads=True)
    with pytest.raises(ShapeError, match="x_loads"):
        run_kernel("scalar", dense, make_x(rng, 6, None), index_bits=32, x_loads=True)
    assert isinstance(_core._csrmv_l1_loads_win(), bool)
    with pytest.raises(FormatError, match="l1_variant"):
        run_kernel("scalar", dense, make_x(rng, 6, None), x_loads=True, l1_variant="avx2")
    with pytest.raises(FormatError, match="l1_variant"):
        run_kernel("avx2" if HAS_AVX2 else "scalar", dense, make_x(rng, 6, None), x_loads=True, l1_variant="sse")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("index_bits", INDEX_BITS)
@pytest.mark.parametrize("n", [32, 33, 64, 97])
@pytest.mark.parametrize("window", [None, (20, 250)])
def test_csrmm_prefetch_changes_nothing(rng, isa, index_bits, n, window):
    """CsrRef::prefetch (X rows of the nonzeros 16 ahead) is only a hint: every
    row length 0..49, with and without a column window, gives the same bits."""
    rows, cols = 50, 300
    dense = every_row_length(rng, rows, cols)
    x = make_x(rng, cols, n)
    bias = rng.standard_normal(rows).astype(np.float32)
    ranges = {} if window is None else {"column_window": window, "y_init": np.ones((rows, n), np.float32)}
    plain = run_kernel(isa, dense, x, bias, True, index_bits, **ranges)
    fetched = run_kernel(isa, dense, x, bias, True, index_bits, prefetch=True, **ranges)
    np.testing.assert_array_equal(fetched, plain)
    if window is None:
        check(fetched, reference(dense, x, bias, True))


# --------------------------------------------------------- sub-ranges
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("index_bits", INDEX_BITS)
@pytest.mark.parametrize("row_begin,row_end", [(0, 20), (3, 17), (5, 6), (7, 7), (19, 20)])
def test_row_range_csrmv(rng, isa, index_bits, row_begin, row_end):
    dense = sparse_dense_array((20, 40), 0.4, rng)
    x = make_x(rng, 40, None)
    bias = rng.standard_normal(20).astype(np.float32)
    y = run_kernel(isa, dense, x, bias, True, index_bits, row_begin=row_begin, row_end=row_end)
    inside = np.zeros(20, bool)
    inside[row_begin:row_end] = True
    check(y[inside], reference(dense, x, bias, True)[inside])
    assert (y[~inside] == MARKER).all()


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("index_bits", INDEX_BITS)
@pytest.mark.parametrize("rows_range,cols_range", [
    ((0, 20), (0, 70)), ((2, 15), (0, 70)), ((0, 20), (1, 70)), ((4, 9), (3, 36)),
    ((0, 20), (32, 65)), ((6, 7), (8, 9)), ((0, 20), (69, 70)), ((10, 10), (0, 70)), ((0, 20), (40, 40)),
    ((1, 19), (5, 44)),
])
def test_row_and_column_range_csrmm(rng, isa, index_bits, rows_range, cols_range):
    dense = sparse_dense_array((20, 37), 0.3, rng)
    x = make_x(rng, 37, 70)
    bias = rng.standard_normal(20).astype(np.float32)
    (rb, re), (cb, ce) = rows_range, cols_range
    y = run_kernel(isa, dense, x, bias, False, index_bits, row_begin=rb, row_end=re, col_begin=cb, col_end=ce)
    inside = np.zeros(y.shape, bool)
    inside[rb:re, cb:ce] = True
    check(y[rb:re, cb:ce], reference(dense, x, bias)[rb:re, cb:ce])
    assert (y[~inside] == MARKER).all()


# -------------------------------------------------- index layout cases
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("index_bits", INDEX_BITS)
@pytest.mark.parametrize("n", [None, 3, 40])
def test_duplicates_add_up(rng, isa, index_bits, n):
    """Repeated column indices in a row are summed, as scipy's CSR does; order need not be sorted."""
    indptr = np.array([0, 3, 3, 23], np.int64)
    indices = np.array([4, 1, 4] + [2, 0, 2, 2, 5, 5, 1, 2, 3, 4, 0, 0, 0, 5, 5, 1, 2, 3, 3, 2], np.int64)
    data = rng.standard_normal(indices.size).astype(np.float32)
    dense = np.zeros((3, 6), np.float64)
    for row in range(3):
        for k in range(indptr[row], indptr[row + 1]):
            dense[row, indices[k]] += data[k]
    x = make_x(rng, 6, n)
    y = run_kernel(isa, np.zeros((3, 6), np.float32), x, None, False, index_bits, indptr=indptr, indices=indices,
                   data=data)
    check(y, reference(dense, x))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n", [None, 1, 11, 40])
def test_more_than_65536_columns_needs_32_bit_indices(rng, isa, n):
    rows, cols = 6, 70_001
    dense = np.zeros((rows, cols), np.float32)
    for r in range(rows):
        where = rng.choice(cols, size=25, replace=False)
        where[0] = cols - 1 - r  # indices above 65535
        where[1] = 65536 + r
        dense[r, where] = rng.standard_normal(25) + 5.0
    x = make_x(rng, cols, n)
    bias = rng.standard_normal(rows).astype(np.float32)
    check(run_kernel(isa, dense, x, bias, False, 32), reference(dense, x, bias))
    with pytest.raises(ShapeError, match="16-bit indices need cols <= 65536"):
        run_kernel(isa, dense, x, bias, False, 16)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("index_bits", INDEX_BITS)
def test_exactly_65536_columns(rng, isa, index_bits):
    """The widest matrix 16-bit indices cover: column 65535 must be reached."""
    dense = np.zeros((3, 65536), np.float32)
    dense[:, 65535] = [1.0, 2.0, -3.0]
    dense[1, 0] = 4.0
    dense[2, rng.choice(65536, 40, replace=False)] = 0.5
    x = make_x(rng, 65536, None)
    check(run_kernel(isa, dense, x, None, False, index_bits), reference(dense, x))


@pytest.mark.parametrize("isa", ISAS)
def test_non_contiguous_inputs_are_copied(rng, isa):
    dense = sparse_dense_array((10, 24), 0.5, rng)
    x = rng.standard_normal((40, 24)).astype(np.float32).T  # Fortran order
    check(run_kernel(isa, dense, x), reference(dense, x))
    x = rng.standard_normal((24, 80)).astype(np.float32)[:, ::2]  # strided columns
    check(run_kernel(isa, dense, x), reference(dense, x))
    x = rng.standard_normal(48).astype(np.float32)[::2]
    check(run_kernel(isa, dense, x), reference(dense, x))


# ---------------------------------------------------- AVX2 vs scalar
@needs_avx2
@pytest.mark.parametrize("index_bits", INDEX_BITS)
@pytest.mark.parametrize("n", [None, 1, 2, 7, 8, 9, 16, 31, 32, 33, 64, 65, 100])
@pytest.mark.parametrize("density", [1.0, 0.5, 0.01])
def test_avx2_matches_scalar(rng, index_bits, n, density):
    dense = sparse_dense_array((37, 300), density, rng)
    dense[5] = 0
    x = make_x(rng, 300, n)
    bias = rng.standard_normal(37).astype(np.float32)
    for relu in (False, True):
        scalar = run_kernel("scalar", dense, x, bias, relu, index_bits)
        avx2 = run_kernel("avx2", dense, x, bias, relu, index_bits)
        check(avx2, scalar.astype(np.float64))


@needs_avx2
@pytest.mark.parametrize("n", [None, 5, 47])
def test_avx2_matches_scalar_on_subranges(rng, n):
    dense = sparse_dense_array((16, 90), 0.2, rng)
    x = make_x(rng, 90, n)
    ranges = dict(row_begin=3, row_end=14) if n is None else dict(row_begin=3, row_end=14, col_begin=2, col_end=n - 1)
    scalar = run_kernel("scalar", dense, x, None, True, 32, **ranges)
    avx2 = run_kernel("avx2", dense, x, None, True, 32, **ranges)
    assert np.array_equal(scalar == MARKER, avx2 == MARKER)
    check(avx2, scalar.astype(np.float64))


# ------------------------------------------------------ bad arguments
def test_bad_kernel_arguments(rng):
    dense = sparse_dense_array((4, 6), 0.5, rng)
    x = make_x(rng, 6, None)
    with pytest.raises(FormatError, match="isa must be 'scalar' or 'avx2', got 'sse9'"):
        run_kernel("sse9", dense, x)
    with pytest.raises(ShapeError, match="index_bits must be 16 or 32"):
        run_kernel("scalar", dense, x, index_bits=8)
    with pytest.raises(ShapeError, match="cols = 6"):
        run_kernel("scalar", dense, make_x(rng, 5, None))
    with pytest.raises(ShapeError, match="cols = 6"):
        run_kernel("scalar", dense, np.zeros((6, 2, 2), np.float32))
    with pytest.raises(ShapeError, match="range out of bounds"):
        run_kernel("scalar", dense, x, row_begin=3, row_end=2)
    with pytest.raises(ShapeError, match="range out of bounds"):
        run_kernel("scalar", dense, x, row_end=5)
    with pytest.raises(ShapeError, match="range out of bounds"):
        run_kernel("scalar", dense, make_x(rng, 6, 4), col_begin=1, col_end=5)
    with pytest.raises(ShapeError, match="bias must have rows entries"):
        run_kernel("scalar", dense, x, bias=np.zeros(3, np.float32))
    with pytest.raises(WeightError, match="kernel test: column index 6 at position 0 is out of range"):
        run_kernel("scalar", dense, x, indptr=np.array([0, 1, 1, 1, 1]), indices=np.array([6]),
                   data=np.ones(1, np.float32))


@pytest.mark.skipif(HAS_AVX2, reason="only on a CPU without AVX2+FMA")
def test_avx2_refused_without_cpu_support(rng):  # pragma: no cover - needs an old CPU
    dense = sparse_dense_array((4, 6), 0.5, rng)
    with pytest.raises(FormatError, match="AVX2"):
        run_kernel("avx2", dense, make_x(rng, 6, None))


# ----------------------------------------------- column panels, accumulation
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("index_bits", INDEX_BITS)
@pytest.mark.parametrize("n", [1, 7, 8, 33, 64, 70])
@pytest.mark.parametrize("window", [None, (0, 300), (37, 211), (100, 100), (250, 300)])
@pytest.mark.parametrize("epilogue", ["none", "bias+relu"])
def test_csrmm_column_window_accumulates_into_y(rng, isa, index_bits, n, window, epilogue):
    dense = sparse_dense_array((29, 300), 0.2, rng)
    dense[3] = 0  # an empty row
    x = make_x(rng, 300, n)
    y0 = rng.standard_normal((29, n)).astype(np.float32)
    bias = rng.standard_normal(29).astype(np.float32) if epilogue != "none" else None
    relu = epilogue == "bias+relu"
    actual = run_kernel(isa, dense, x, bias=bias, relu=relu, index_bits=index_bits, y_init=y0,
                        column_window=window)
    lo, hi = window or (0, 300)
    expected = y0.astype(np.float64) + reference(dense[:, lo:hi], x[lo:hi], bias=bias)
    check(actual, np.maximum(expected, 0.0) if relu else expected)


@needs_avx2
@pytest.mark.parametrize("n", [5, 64, 100])
def test_avx2_matches_scalar_on_column_windows(rng, n):
    dense = sparse_dense_array((40, 1000), 0.05, rng)
    x = make_x(rng, 1000, n)
    y0 = rng.standard_normal((40, n)).astype(np.float32)
    for window in [(0, 512), (512, 1000), (3, 997)]:
        got = {isa: run_kernel(isa, dense, x, y_init=y0, column_window=window, row_begin=2, row_end=37,
                               col_begin=1, col_end=n) for isa in ("scalar", "avx2")}
        check(got["avx2"], got["scalar"].astype(np.float64))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("cols,density,rows", [(6145, 0.05, 40), (8192, 0.1, 300), (25088, 0.04, 97),
                                               (70000, 0.01, 24), (9000, 0.0005, 30)])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_long_x_runs_vector_panel_by_panel_exactly_as_numpy(rng, monkeypatch, restore_threads, isa, cols,
                                                            density, rows, threads):
    """At batch 1, an x longer than L1 holds (over 6,144 columns) is walked in
    slices of at most 4,096 columns (WeightedLayer's vector panels), each
    row range once per slice, adding into y: the uneven last slice (6,145 and
    25,088 columns), indices relative to their slice (70,000 columns: 32-bit in
    the CSR, 16-bit in the panels), empty rows and rows without nonzeros in some
    slices, row ranges split over 1-3 workers, and the bias + ReLU on the last
    slice must give the plain product. At 0.05 % density (under 16 nonzeros per
    row and slice) there are no panels: the plain csrmv."""
    import sparsenet

    monkeypatch.setenv("SPARSENET_ISA", isa)
    sparsenet.set_num_threads(threads)
    dense = sparse_dense_array((rows, cols), density, rng)
    dense[5] = 0
    dense[7, : cols // 2] = 0  # nonzeros only in the later slices
    bias = rng.standard_normal(rows).astype(np.float32)
    model = sparsenet.Model([sparsenet.Linear(dense, bias), sparsenet.ReLU()], backend="sparse")
    x = rng.standard_normal((1, cols)).astype(np.float32)
    expected = np.maximum(x.astype(np.float64) @ dense.T.astype(np.float64) + bias, 0.0)
    check(model(x), expected)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("cols,density,rows", [(1100, 0.3, 96), (4096, 0.1, 96), (20000, 0.004, 96),
                                               (70000, 0.01, 24), (1500, 0.05, 1100)])
@pytest.mark.parametrize("n", [2, 17, 64, 130])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_wide_linear_runs_panel_by_panel_exactly_as_numpy(rng, monkeypatch, restore_threads, isa, cols,
                                                          density, rows, n, threads):
    """Layers whose X does not fit in cache go panel by panel (WeightedLayer's
    column panels), in blocks of rows: every panel boundary, the empty panels of
    very sparse rows, the 16- and 32-bit indices (70,000 columns), several row
    blocks (1,100 rows: the nonzeros are stored block by block, panel by panel,
    and the workers' row ranges, balanced by nonzeros, cut across blocks), the
    batch of 130 copied into chunks of 64, 64 and 2 contiguous columns, and the
    bias + ReLU on the last panel must give the plain product."""
    import sparsenet

    monkeypatch.setenv("SPARSENET_ISA", isa)
    sparsenet.set_num_threads(threads)
    dense = sparse_dense_array((rows, cols), density, rng)
    dense[5] = 0
    bias = rng.standard_normal(rows).astype(np.float32)
    model = sparsenet.Model([sparsenet.Linear(dense, bias), sparsenet.ReLU()], backend="sparse")
    x = rng.standard_normal((n, cols)).astype(np.float32)
    expected = np.maximum(x.astype(np.float64) @ dense.T.astype(np.float64) + bias, 0.0)
    check(model(x), expected)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("batch", [1, 3])
def test_wide_strided_conv_runs_im2col_panels_exactly_as_numpy(rng, monkeypatch, restore_threads, isa, threads,
                                                               batch):
    """A strided convolution (no direct path) with 130 x 3 x 3 = 1,170 weight
    columns goes through im2col and the column panels' stored walk order."""
    import sparsenet

    monkeypatch.setenv("SPARSENET_ISA", isa)
    sparsenet.set_num_threads(threads)
    weight = sparse_dense_array((40, 130, 3, 3), 0.2, rng)
    bias = rng.standard_normal(40).astype(np.float32)
    model = sparsenet.Model([sparsenet.Conv2d(weight, bias, stride=2, padding=1)], backend="sparse")
    x = rng.standard_normal((batch, 130, 21, 19)).astype(np.float32)
    check(model(x), ref_conv2d(x.astype(np.float64), weight.astype(np.float64), bias, stride=2, padding=1))

# ------------------------------------------------------ dense direct convolution
def conv_dense_reference(w, offsets, x, n, bias=None, relu=False, row0=0):
    """y[r, j] = sum_i w[r, i] * x[offsets[i] + j], then bias[row0 + r] and ReLU, in float64."""
    gathered = np.stack([x[offsets.astype(np.int64) + j] for j in range(n)], axis=1).astype(np.float64)
    y = w.astype(np.float64) @ gathered
    if bias is not None:
        y += bias[row0:row0 + w.shape[0], None]
    return np.maximum(y, 0.0) if relu else y


# Each tile and its width in output columns.
CONV_DENSE_COLS = {"scalar": 16, "avx2": 16, "avx512": 32}
CONV_DENSE_MARKS = {"scalar": (), "avx2": needs_avx2, "avx512": needs_avx512}


def conv_dense_cases(*cases):
    """(kernel, m, n) params for every kernel whose tile is at least n columns wide."""
    return [pytest.param(kernel, m, n, marks=CONV_DENSE_MARKS[kernel], id=f"{kernel}-{m}x{n}")
            for kernel in CONV_DENSE_COLS for m, n in cases if n <= CONV_DENSE_COLS[kernel]]


@pytest.mark.parametrize("kernel, m, n", conv_dense_cases(
    *[(m, n) for m in (1, 4, 6) for n in (1, 3, 7, 8, 9, 15, 16, 17, 24, 31, 32)]))
@pytest.mark.parametrize("k", [1, 5, 27])
@pytest.mark.parametrize("epilogue", [{}, {"relu": True}, {"bias": True, "relu": True, "row0": 4}])
def test_conv_dense_matches_numpy(rng, kernel, m, n, k, epilogue):
    cols = CONV_DENSE_COLS[kernel]
    w = rng.standard_normal((m, k)).astype(np.float32)
    x = rng.standard_normal(200).astype(np.float32)
    offsets = rng.integers(0, 200 - cols, size=k).astype(np.uint32)
    bias = rng.standard_normal(10).astype(np.float32) if epilogue.get("bias") else None
    relu, row0 = epilogue.get("relu", False), epilogue.get("row0", 0)
    y = _core._raw_conv_dense_kernel(kernel, w, offsets, x, n, bias=bias, relu=relu, row0=row0)
    check(y, conv_dense_reference(w, offsets, x, n, bias, relu, row0))


@pytest.mark.parametrize("kernel, m, n", conv_dense_cases((6, 16), (6, 11), (2, 3), (5, 8), (6, 32), (3, 20)))
def test_conv_dense_accumulates_into_y(rng, kernel, m, n):
    """A second panel of weight columns adds to the first's sums; bias and ReLU last."""
    cols = CONV_DENSE_COLS[kernel]
    w = rng.standard_normal((m, 20)).astype(np.float32)
    x = rng.standard_normal(100).astype(np.float32)
    offsets = rng.integers(0, 100 - cols, size=20).astype(np.uint32)
    bias = rng.standard_normal(m).astype(np.float32)
    first = _core._raw_conv_dense_kernel(kernel, np.ascontiguousarray(w[:, :7]), offsets[:7], x, n)
    both = _core._raw_conv_dense_kernel(kernel, np.ascontiguousarray(w[:, 7:]), offsets[7:], x, n, bias=bias,
                                        relu=True, y_init=first)
    check(both, conv_dense_reference(w, offsets, x, n, bias, True))


@pytest.mark.parametrize("kernel, m, n", conv_dense_cases((6, 2), (6, 17)))
def test_conv_dense_drops_the_lanes_past_n(rng, kernel, m, n):
    """Lanes past n read NaN and Inf from x and never reach y (the caller's tail)."""
    w = rng.standard_normal((m, 4)).astype(np.float32)
    x = rng.standard_normal(60).astype(np.float32)
    offsets = np.array([0, 1, 2, 3], np.uint32)
    x[n + 3:] = np.nan
    x[n + 7] = np.inf
    y = _core._raw_conv_dense_kernel(kernel, w, offsets, x, n)
    check(y, conv_dense_reference(w, offsets, x, n))


@needs_avx2
@pytest.mark.parametrize("n", [5, 16])
def test_conv_dense_avx2_matches_scalar(rng, n):
    w = rng.standard_normal((6, 300)).astype(np.float32)
    x = rng.standard_normal(2000).astype(np.float32)
    offsets = rng.integers(0, 2000 - 16, size=300).astype(np.uint32)
    bias = rng.standard_normal(6).astype(np.float32)
    a = _core._raw_conv_dense_kernel("avx2", w, offsets, x, n, bias=bias, relu=True)
    b = _core._raw_conv_dense_kernel("scalar", w, offsets, x, n, bias=bias, relu=True)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(np.abs(b).max()))


@needs_avx512
@pytest.mark.parametrize("m", [1, 5, 6])
@pytest.mark.parametrize("n", [3, 16, 21, 32])
def test_conv_dense_avx512_sums_as_avx2(rng, m, n):
    """The 32-column tile adds in the 16-column tile's order: the same bits, column for column."""
    w = rng.standard_normal((m, 300)).astype(np.float32)
    x = rng.standard_normal(2000).astype(np.float32)
    offsets = rng.integers(0, 2000 - 32, size=300).astype(np.uint32)
    bias = rng.standard_normal(8).astype(np.float32)
    wide = _core._raw_conv_dense_kernel("avx512", w, offsets, x, n, bias=bias, relu=True, row0=1)
    for j0 in range(0, n, 16):
        part = _core._raw_conv_dense_kernel("avx2", w, offsets + np.uint32(j0), x, min(16, n - j0), bias=bias,
                                            relu=True, row0=1)
        np.testing.assert_array_equal(wide[:, j0:j0 + 16], part)


CONV3_KERNELS = ["scalar", pytest.param("avx2", marks=needs_avx2), pytest.param("avx512", marks=needs_avx512)]


CONV3_COLUMNS = [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]  # kernels.h's groups


def conv3_reference(values, offsets, groups, x, col_begin, col_end, y_init, bias=None, relu=False,
                    accumulate=False, period=0):
    """KernelTable::conv3's contract (kernels.h), position by position in float64."""
    y = y_init.astype(np.float64)
    for r in range(y.shape[0]):
        for c0 in range(col_begin, col_end, 64):
            z = np.zeros((3, 64))
            w = int(groups[8, r])
            for g, columns in enumerate(CONV3_COLUMNS):
                for e in range(groups[g, r], groups[g + 1, r]):
                    run = x[offsets[e] + c0:offsets[e] + c0 + 64].astype(np.float64)
                    for j in columns:
                        term = float(values[w]) * run
                        if period:  # the neighbours past a row's ends are left out
                            at = np.arange(c0, c0 + 64)
                            term[(at + 1) % period == 0 if j == 0 else at % period == 0 if j == 2 else False] = 0
                        z[j] += term
                        w += 1
            for p in range(c0 - 2, min(c0 + 64, col_end)):
                total = sum(z[j, p + j - c0] for j in range(3) if 0 <= p + j - c0 < 64)
                v = y[r, p] + total if accumulate or p < c0 else total
                if p < c0 + 62:
                    v += 0.0 if bias is None else float(bias[r])
                    v = max(v, 0.0) if relu else v
                y[r, p] = v
    return y


def conv3_case(rng, rows=5, per_group=(0, 9), x_size=700, joint=True):
    """Random entries in the 7 groups (only the one-column groups unless
    joint), rows one after the other, each row's weights after a random gap."""
    counts = rng.integers(*per_group, size=(7, rows), endpoint=True)
    if not joint:
        counts[3:] = 0
    groups = np.zeros((9, rows), np.uint32)
    entries = weights = 0
    for r in range(rows):
        weights += int(rng.integers(0, 3))
        groups[8, r] = weights
        for g in range(7):
            groups[g, r] = entries
            entries += int(counts[g, r])
            weights += len(CONV3_COLUMNS[g]) * int(counts[g, r])
        groups[7, r] = entries
    values = rng.standard_normal(weights).astype(np.float32)
    offsets = (rng.integers(0, (x_size - 400) // 8, size=entries) * 8).astype(np.uint32)
    x = rng.standard_normal(x_size).astype(np.float32)
    return values, offsets, groups, x


@pytest.mark.parametrize("kernel", CONV3_KERNELS)
@pytest.mark.parametrize("cols", [(2, 66), (2, 200), (10, 75), (2, 5), (34, 290)])
@pytest.mark.parametrize("epilogue", [{}, {"bias": True, "relu": True}, {"accumulate": True},
                                      {"accumulate": True, "bias": True}])
def test_conv3_matches_its_contract(rng, kernel, cols, epilogue):
    """Whole tiles and a partial last one; the two positions before each tile
    always add, the rest only when accumulating; the epilogue stops two short
    of a tile's end; empty groups (per_group from 0); entries holding one, two
    and three kernel columns."""
    values, offsets, groups, x = conv3_case(rng)
    col_begin, col_end = cols
    y_init = rng.standard_normal((5, 300)).astype(np.float32)
    bias = rng.standard_normal(5).astype(np.float32) if epilogue.get("bias") else None
    relu, accumulate = epilogue.get("relu", False), epilogue.get("accumulate", False)
    y = _core._raw_conv3_kernel(kernel, values, offsets, groups, x, col_begin, col_end, y_init, bias=bias,
                                relu=relu, accumulate=accumulate)
    check(y, conv3_reference(values, offsets, groups, x, col_begin, col_end, y_init, bias, relu, accumulate))


@pytest.mark.parametrize("kernel", CONV3_KERNELS)
@pytest.mark.parametrize("period", [8, 16, 40, 64, 72, 200])
def test_conv3_with_a_period_leaves_out_the_neighbours_past_row_ends(rng, kernel, period):
    """Rows without padding columns (kernels.h): z_0 left out where
    (q + 1) % period == 0 and z_2 where q % period == 0, q counted from x;
    tiles starting anywhere in a row (col_begin 10), a partial last one."""
    values, offsets, groups, x = conv3_case(rng, per_group=(0, 6))
    y_init = rng.standard_normal((5, 300)).astype(np.float32)
    bias = rng.standard_normal(5).astype(np.float32)
    for accumulate in (False, True):
        y = _core._raw_conv3_kernel(kernel, values, offsets, groups, x, 10, 290, y_init, bias=bias, relu=True,
                                    accumulate=accumulate, period=period)
        check(y, conv3_reference(values, offsets, groups, x, 10, 290, y_init, bias, True, accumulate, period))


@pytest.mark.parametrize("kernel", CONV3_KERNELS[1:])
@pytest.mark.parametrize("joint", [True, False])
def test_conv3_matches_scalar(rng, kernel, joint):
    """Joint entries (the AVX-512 kernel's plans), or one-column entries only
    (the AVX2 kernel's)."""
    values, offsets, groups, x = conv3_case(rng, rows=40, per_group=(0, 60), x_size=5000, joint=joint)
    y_init = rng.standard_normal((40, 330)).astype(np.float32)
    bias = rng.standard_normal(40).astype(np.float32)
    a = _core._raw_conv3_kernel(kernel, values, offsets, groups, x, 2, 330, y_init, bias=bias, relu=True)
    b = _core._raw_conv3_kernel("scalar", values, offsets, groups, x, 2, 330, y_init, bias=bias, relu=True)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(np.abs(b).max()))


def test_bad_conv3_arguments(rng):
    values, offsets, groups, x = conv3_case(rng)
    y = np.zeros((5, 100), np.float32)
    with pytest.raises(FormatError, match="not one of"):
        _core._raw_conv3_kernel("neon", values, offsets, groups, x, 2, 66, y)
    with pytest.raises(ShapeError, match="col_begin"):
        _core._raw_conv3_kernel("scalar", values, offsets, groups, x, 0, 66, y)
    with pytest.raises(ShapeError, match="groups must be"):
        _core._raw_conv3_kernel("scalar", values, offsets, groups[:, :4], x, 2, 66, y)
    with pytest.raises(ShapeError, match="x must hold"):
        _core._raw_conv3_kernel("scalar", values, offsets, groups, x[:100], 2, 66, y)
    with pytest.raises(ShapeError, match="weights run past values"):
        _core._raw_conv3_kernel("scalar", values[:-1], offsets, groups, x, 2, 66, y)
    with pytest.raises(ShapeError, match="nondecreasing"):
        _core._raw_conv3_kernel("scalar", values, offsets[:-1], groups, x, 2, 66, y)
    with pytest.raises(ShapeError, match="period"):
        _core._raw_conv3_kernel("scalar", values, offsets, groups, x, 2, 66, y, period=-1)


def test_bad_conv_dense_arguments(rng):
    w = np.ones((6, 3), np.float32)
    x = np.ones(20, np.float32)
    with pytest.raises(ShapeError, match="w must be"):
        _core._raw_conv_dense_kernel("scalar", np.ones((7, 3), np.float32), np.zeros(3, np.uint32), x, 4)
    with pytest.raises(ShapeError, match="row0 must be"):
        _core._raw_conv_dense_kernel("scalar", w, np.zeros(3, np.uint32), x, 4, bias=np.ones(6, np.float32), row0=-1)
    with pytest.raises(ShapeError, match="offsets must be"):
        _core._raw_conv_dense_kernel("scalar", w, np.zeros(4, np.uint32), x, 4)
    with pytest.raises(ShapeError, match="n must be"):
        _core._raw_conv_dense_kernel("scalar", w, np.zeros(3, np.uint32), x, 17)
    with pytest.raises(ShapeError, match="x must hold"):
        _core._raw_conv_dense_kernel("scalar", w, np.array([0, 1, 5], np.uint32), x, 4)
    with pytest.raises(FormatError, match="not one of"):
        _core._raw_conv_dense_kernel("avx3", w, np.zeros(3, np.uint32), x, 4)
    if _core.cpu_has_avx512vl():
        with pytest.raises(ShapeError, match="n must be"):
            _core._raw_conv_dense_kernel("avx512", w, np.zeros(3, np.uint32), np.ones(40, np.float32), 33)
        with pytest.raises(ShapeError, match="x must hold"):  # 32 floats past each offset
            _core._raw_conv_dense_kernel("avx512", w, np.array([0, 1, 5], np.uint32), np.ones(36, np.float32), 4)


# ------------------------------------------------------ 2x2 stride-2 max pooling
def maxpool2x2_reference(x, n):
    """The kernel's order of comparisons, max(a, b) = b if a < b else a (std::max)."""
    out = []
    for i in range(n):
        m = np.float32(-np.inf)
        for v in (x[0, 2 * i], x[0, 2 * i + 1], x[1, 2 * i], x[1, 2 * i + 1]):
            m = v if m < v else m
        out.append(m)
    return np.array(out, np.float32)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("w, n", [(2, 1), (8, 4), (10, 5), (15, 7), (16, 8), (17, 8), (28, 14), (34, 17), (56, 28),
                                  (56, 20), (4, 0)])
def test_maxpool2x2_matches_reference_bit_for_bit(rng, isa, w, n):
    x = rng.standard_normal((2, w)).astype(np.float32)
    y = _core._raw_maxpool2x2_kernel(isa, x, n)
    assert np.array_equal(y.view(np.uint32), maxpool2x2_reference(x, n).view(np.uint32))


@pytest.mark.parametrize("isa", ISAS)
def test_maxpool2x2_nan_inf_and_signed_zeros(isa):
    """NaN, infinities and signed zeros in every lane and tail position give the
    bits std::max gives in the kernel's order (a NaN after a number is skipped,
    one compared first stays; of -0 and +0 the first seen stays)."""
    special = np.array([np.nan, -0.0, 0.0, np.inf, -np.inf, 1.0, -1.0], np.float32)
    rng = np.random.default_rng(5)
    for n in (20, 14, 7):  # 8-wide steps, the 4-wide step, the scalar tail
        for _ in range(50):
            x = rng.choice(special, size=(2, 2 * n)).astype(np.float32)
            y = _core._raw_maxpool2x2_kernel(isa, x, n)
            assert np.array_equal(y.view(np.uint32), maxpool2x2_reference(x, n).view(np.uint32))


def test_bad_maxpool2x2_arguments():
    with pytest.raises(ShapeError, match="x must be"):
        _core._raw_maxpool2x2_kernel("scalar", np.ones((3, 4), np.float32), 2)
    with pytest.raises(ShapeError, match="n must be"):
        _core._raw_maxpool2x2_kernel("scalar", np.ones((2, 4), np.float32), 3)


def bit_pattern_matrix(rng, rows, cols):
    """Random float bits, NaN payloads and signed zeros included: a transpose copies bits."""
    return rng.integers(0, 2**32, size=(rows, cols), dtype=np.uint32).view(np.float32)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("rows,cols", [(1, 1), (1, 37), (37, 1), (7, 7), (8, 8), (9, 17), (16, 16), (24, 40),
                                       (64, 4096), (4096, 64), (33, 65), (100, 3), (300, 130), (130, 300),
                                       (1100, 21)])
def test_transpose_kernel_copies_bits(rng, isa, rows, cols):
    """Whole 8 x 8 register transposes, their edges and the element-wise rest, on
    blocks and tails of both sides."""
    x = bit_pattern_matrix(rng, rows, cols)
    out = _core._raw_transpose_kernel(isa, x, cols, np.zeros((cols, rows), np.float32))
    assert np.array_equal(out.view(np.uint32), x.T.view(np.uint32))


@pytest.mark.parametrize("isa", ISAS)
def test_transpose_kernel_leading_dimensions(rng, isa):
    """A block of a wider input into a wider output: the columns past cols of the
    input are not read into it, the output's past rows are left alone."""
    x = bit_pattern_matrix(rng, 21, 50)
    init = np.full((43, 30), 7.0, np.float32)
    out = _core._raw_transpose_kernel(isa, x, 43, init)
    assert np.array_equal(out[:, :21].view(np.uint32), x[:, :43].T.view(np.uint32))
    assert np.all(out[:, 21:] == 7.0)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("rows,cols", [(64, 4096), (4096, 64), (67, 1031), (1031, 67), (5, 20000), (20000, 5)])
def test_transpose_matrix_on_the_pool(rng, restore_threads, isa, threads, rows, cols):
    """Bands of whole blocks over the workers along the longer side, the last band
    short, and matrices below the parallel threshold on one thread."""
    sparsenet.set_num_threads(threads)
    x = bit_pattern_matrix(rng, rows, cols)
    assert np.array_equal(_core._transpose_matrix(isa, x).view(np.uint32), x.T.view(np.uint32))


def test_bad_transpose_arguments():
    with pytest.raises(ShapeError, match="cols must be"):
        _core._raw_transpose_kernel("scalar", np.ones((3, 4), np.float32), 5, np.zeros((5, 3), np.float32))
    with pytest.raises(ShapeError, match="out_init must be"):
        _core._raw_transpose_kernel("scalar", np.ones((3, 4), np.float32), 4, np.zeros((4, 2), np.float32))
