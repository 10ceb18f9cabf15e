"""kernels.blas: the BLAS gemm with alpha/beta and the int -> float bit cast, against NumPy.

Run jitted (through @njit callers, as the kernels use them) and, under NUMBA_DISABLE_JIT=1
(``make test-nojit``), as their plain-Python bodies.
"""
from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from kernels.blas import float_from_bits, gemm
from kernels.smallmm import gemm_nn, gemm_nt


@njit(cache=False)
def _gemm(alpha, A, B, beta, C, trans_b):
    gemm(alpha, A, B, beta, C, trans_b)


@njit(cache=False)
def _gemm_ta(alpha, A, B, beta, C, trans_b, trans_a):
    gemm(alpha, A, B, beta, C, trans_b, trans_a)


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
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a", [True, False])
@pytest.mark.parametrize("trans_b", [True, False])
@pytest.mark.parametrize("M,N,K", [(1, 1, 1), (1, 37, 5), (13, 7, 29), (64, 130, 128), (9, 3, 0)])
def test_gemm_transposed_a_matches_numpy(dtype, trans_a, trans_b, M, N, K):
    """op(A) = A^T (the backward pass's P^T dO and dS^T Q), on row slices of wider arrays."""
    rng = np.random.default_rng(M * 999 + N * 7 + K + 3 * trans_a + trans_b)
    A = rng.standard_normal((K, M + 3) if trans_a else (M, K + 3)).astype(dtype)
    A = A[:, :M] if trans_a else A[:, :K]
    Bfull = rng.standard_normal((N, K + 2) if trans_b else (K, N + 4)).astype(dtype)
    B = Bfull[:, :K] if trans_b else Bfull[:, :N]
    C = rng.standard_normal((M, N + 1)).astype(dtype)[:, :N]
    opA = (A.T if trans_a else A).astype(np.float64)
    want = -1.5 * (opA @ (B.T if trans_b else B).astype(np.float64)) + C.astype(np.float64)
    _gemm_ta(dtype(-1.5), A, B, dtype(1.0), C, trans_b, trans_a)
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


# --- which library: kernels._blaslib ---------------------------------------------------------

def test_the_library_choice_and_its_errors(monkeypatch):
    from kernels import _blaslib

    with pytest.raises(ValueError, match="ATTNVIZ_BLAS='fast': choose one of auto, openblas"):
        _blaslib.choose("fast")
    monkeypatch.setattr(_blaslib, "_mkl_path", lambda: None)
    with pytest.raises(RuntimeError, match="mkl wheel is not installed"):
        _blaslib.choose("mkl")
    assert _blaslib.choose("auto") == ("openblas", None, "auto: mkl not installed")
    monkeypatch.setattr(_blaslib, "_mkl_path", lambda: "/opt/libmkl_rt.so.3")
    monkeypatch.setattr(_blaslib, "_intel_cpu", lambda: False)
    assert _blaslib.choose(None) == ("openblas", None, "auto: not an Intel CPU")
    assert _blaslib.choose(" OpenBLAS ")[0] == "openblas"
    monkeypatch.setattr(_blaslib, "_intel_cpu", lambda: True)
    assert _blaslib.choose("auto")[:2] == ("mkl", "/opt/libmkl_rt.so.3")


_ONE_RUN = """
import numpy as np, sys, kernels
from tests.helpers import qkv
q, k, v = qkv(1, 4, 2, 77, 133, 48, seed=5)
O, lse = kernels.streaming_attention(q, k, v, return_lse=True, q_block=32, kv_block=48)
np.savez(sys.argv[1], O=O, lse=lse, blas=kernels.BLAS.name)
"""


def _libraries() -> list[str]:
    from kernels import _blaslib

    return ["openblas"] + (["mkl"] if _blaslib._mkl_path() else [])


@pytest.mark.parametrize("library", _libraries())
def test_each_library_binds_and_the_kernels_match_the_oracle(library, tmp_path):
    """A new process per library, loading the same on-disk JIT cache: the kernels call the
    GEMM symbols by name, whichever library that process bound."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.helpers import assert_matches_oracle, qkv

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "run.npz"
    env = os.environ | {"ATTNVIZ_BLAS": library, "PYTHONPATH": str(root)}
    env.pop("NUMBA_DISABLE_JIT", None)
    subprocess.run([sys.executable, "-c", _ONE_RUN, str(out)], cwd=root, env=env, check=True,
                   timeout=600)
    got = np.load(out)
    assert str(got["blas"]) == library
    q, k, v = qkv(1, 4, 2, 77, 133, 48, seed=5)
    assert_matches_oracle(got["O"], got["lse"], q, k, v, causal=True)


def test_a_broken_mkl_falls_back_to_openblas_unless_asked_for(monkeypatch):
    import llvmlite.binding as llvm

    from kernels import _blaslib

    bound = {}  # what would be bound; the process keeps its real binding
    monkeypatch.setattr(llvm, "add_symbol", lambda name, addr: bound.__setitem__(name, addr))
    monkeypatch.setattr(_blaslib, "_BOUND", None)
    monkeypatch.setattr(_blaslib, "_mkl_path", lambda: "/nonexistent/libmkl_rt.so.3")
    monkeypatch.setattr(_blaslib, "_intel_cpu", lambda: True)
    monkeypatch.delenv("ATTNVIZ_BLAS", raising=False)
    lib = _blaslib.bind()
    assert lib.name == "openblas" and lib.reason.startswith("auto: mkl did not load")
    assert set(bound) == set(_blaslib.SYMBOLS.values()) and all(bound.values())
    assert "scipy.libs" in lib.path
    monkeypatch.setattr(_blaslib, "_BOUND", None)
    monkeypatch.setenv("ATTNVIZ_BLAS", "mkl")
    with pytest.raises(OSError):
        _blaslib.bind()


@pytest.mark.parametrize("loops", [True, False], ids=["loops", "blas"])
def test_the_few_row_products_match_numpy_on_ragged_shapes(loops):
    """``smallmm``'s blocked loops (4 x 4 blocks, then the leftover rows and keys) and its BLAS
    path, against float64 NumPy, for every M and N around the block edges."""
    @njit
    def both(alpha, Q, K, P, V, S, O, beta):
        gemm_nt(alpha, Q, K, S, loops)
        gemm_nn(P, V, beta, O, loops)

    rng = np.random.default_rng(7)
    for M in (1, 2, 3, 4, 5, 7, 8, 9):
        for N in (1, 3, 4, 6, 8, 13):
            D = 5 + M + N  # ragged, not a multiple of a vector
            Q, K, V = (rng.standard_normal(s, dtype=np.float32) for s in ((M, D), (N, D), (N, D)))
            P = rng.random((M, N), dtype=np.float32)
            O0 = rng.standard_normal((M, D), dtype=np.float32)
            for beta in (0.0, 1.0):
                S = np.full((M, N), np.nan, np.float32)
                O = O0.copy()
                both(np.float32(0.5), Q, K, P, V, S, O, beta)
                np.testing.assert_allclose(S, 0.5 * (Q.astype(np.float64) @ K.T.astype(np.float64)),
                                           rtol=1e-5, atol=1e-5)
                want = P.astype(np.float64) @ V.astype(np.float64) + beta * O0
                np.testing.assert_allclose(O, want, rtol=1e-5, atol=1e-5)
