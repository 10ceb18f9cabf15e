"""kernels.blas: the BLAS gemm with alpha/beta and the int -> float bit cast, against NumPy.

Run jitted (through @njit callers, as the kernels use them) and, under NUMBA_DISABLE_JIT=1
(``make test-nojit``), as their plain-Python bodies.
"""
from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from kernels.blas import float_from_bits, gemm


@njit(cache=False)
def _gemm(alpha, A, B, beta, C, trans_b):
    gemm(alpha, A, B, beta, C, trans_b)


@njit(cache=False)
def _bits(b):
    out = np.empty(b.shape[0], np.float32)
    for c in range(b.shape[0]):
        out[c] = float_from_bits(b[c])
    return out


@pytest.mark.nojit
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_b", [True, False])
@pytest.mark.parametrize("M,N,K", [(1, 1, 1), (1, 37, 5), (13, 7, 29), (64, 130, 128), (9, 3, 0)])
@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (0.125, 0.0), (1.0, 1.0), (-2.5, 1.0)])
def test_gemm_matches_numpy(dtype, trans_b, M, N, K, alpha, beta):
    rng = np.random.default_rng(M * 1000 + N * 10 + K)
    # operands are row slices of wider arrays: unit inner stride, row stride > row length
    A = rng.standard_normal((M, K + 3)).astype(dtype)[:, :K]
    Bfull = rng.standard_normal((N, K + 2) if trans_b else (K, N + 4)).astype(dtype)
    B = Bfull[:, :K] if trans_b else Bfull[:, :N]
    C = rng.standard_normal((M, N + 1)).astype(dtype)[:, :N]
    want = (alpha * (A.astype(np.float64) @ (B.T if trans_b else B).astype(np.float64))
            + beta * C.astype(np.float64))
    _gemm(dtype(alpha), A, B, dtype(beta), C, trans_b)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(C, want, rtol=tol, atol=tol * max(1, K))


@pytest.mark.nojit
def test_gemm_refuses_strided_rows():
    A = np.ones((4, 8), np.float32)[:, ::2]
    with pytest.raises(ValueError, match="contiguous"):
        _gemm(np.float32(1), A, np.ones((4, 4), np.float32), np.float32(0),
              np.empty((4, 4), np.float32), True)


@pytest.mark.nojit
def test_float_from_bits_is_a_bit_cast():
    x = np.array([0.0, 1.0, -2.5, 2.0**-126, 3.4e38, np.inf, -np.inf], np.float32)
    np.testing.assert_array_equal(_bits(x.view(np.int32)), x)
    assert _bits(np.array([127 << 23, 0], np.int32)).tolist() == [1.0, 0.0]
