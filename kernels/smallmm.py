"""Matrix products of few rows, as plain loops or through BLAS: one flag per call chooses.

A decode tile has only g = Hq / Hkv rows (often 1-8) against Bc keys. Whether BLAS's
``gemm`` beats plain loops that stream each K/V row through the cache once depends on the
library, the machine and the product: on oneMKL (Intel) BLAS measured 1.1-1.5x faster on
such tiles; on OpenBLAS (AMD EPYC), for a [4, 1024] x [1024, 128] tile in cache, the loops
took 20.6 ns per key for S = Q K^T where BLAS took 47.4, and 20.8 for P~ V where BLAS took
8.9. So the choice is a flag per product, measured per host by ``kernels.autotune`` and
passed down by the drivers (``tile.tile_update``'s ``loops`` pair); never a copy of the
kernel.

    gemm_nt(alpha, A, B, C, loops):  C = alpha * A B^T       A [M, D], B [N, D], C [M, N]
    gemm_nn(A, B, beta, C, loops):   C = A B + beta * C      A [M, N], B [N, D], C [M, D]

The loops keep the inner index contiguous (d over a row of B), so LLVM vectorizes them, and
take four rows of B at a time: ``gemm_nt`` keeps four sums per row of A (one load of A[i, d]
for four products), ``gemm_nn`` adds four rows of B per pass over C (a quarter of the loads
and stores of C). One row at a time, the loops were bound by those loads and stores, not by
memory: 19-21 GB/s on a [4, 256] x [256, 128] tile held in cache, 28-30 GB/s four at a time
(AMD EPYC host). Tried and not kept: blocks of 4 rows x 4 keys (16 sums in registers) ran
1.4-1.7x faster again on a tile held in cache, but half as fast on K/V streamed from memory
(one thread: 7.5-9.6 against 16 GB/s), which is where decode reads them; so did 4 rows x
2 keys for S (8 sums): 14.9 against 20.6 ns per key in cache, but a decode at L = 8192
(Hq=32, Hkv=8, D=128, P~ V through BLAS in both) took 2.56 ms against 2.20; and 4 keys x 2
rows: 17.0 ns per key in cache, 0.93x the decode time at L = 1024 (K/V in L3), 1.42x at
L = 8192. Register blocks win in cache and lose on K/V streamed from memory. Also tried for
S: two keys per pass (S alone on K streamed from memory, 2 threads: 29 against 34 ns per key
per thread; in cache 23.7 against 20.6), but the whole decode at L = 8192 was no faster
(2.07, 1.69, 1.76 ms against 2.03, 2.03, 1.72 in alternating processes); and a software
prefetch of the K rows 8, 16 or 32 keys ahead: S alone took 1.11x, 1.29x and 1.45x the time.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ._config import FASTMATH
from .blas import gemm


@njit(cache=True, fastmath=FASTMATH, inline="always")
def gemm_nt(alpha, A, B, C, loops):
    """C = alpha * A B^T for A [M, D], B [N, D], C [M, N]; ``loops``: plain loops, else BLAS."""
    if not loops:
        gemm(alpha, A, B, 0.0, C, True)
        return
    M, D = A.shape
    N = B.shape[0]
    N4 = N - N % 4
    for n in range(0, N4, 4):  # four rows of B at a time: four sums share each load of A
        for i in range(M):
            s0 = s1 = s2 = s3 = np.float32(0.0)
            for d in range(D):
                a = A[i, d]
                s0 += a * B[n, d]
                s1 += a * B[n + 1, d]
                s2 += a * B[n + 2, d]
                s3 += a * B[n + 3, d]
            C[i, n] = alpha * s0
            C[i, n + 1] = alpha * s1
            C[i, n + 2] = alpha * s2
            C[i, n + 3] = alpha * s3
    for n in range(N4, N):
        for i in range(M):
            s = np.float32(0.0)
            for d in range(D):
                s += A[i, d] * B[n, d]
            C[i, n] = alpha * s


@njit(cache=True, fastmath=FASTMATH, inline="always")
def gemm_nn(A, B, beta, C, loops):
    """C = A B + beta * C for A [M, N], B [N, D], C [M, D], beta 0 or 1; ``loops``: plain
    loops, else BLAS. As in BLAS, a 0 in A times a NaN in B gives NaN (0 * NaN)."""
    if not loops:
        gemm(1.0, A, B, beta, C, False)
        return
    if beta == 0.0:
        C[:] = 0.0
    N = B.shape[0]
    N4 = N - N % 4
    for n in range(0, N4, 4):  # four rows of B per pass over C: a quarter of C's stores
        for i in range(A.shape[0]):
            a0, a1, a2, a3 = A[i, n], A[i, n + 1], A[i, n + 2], A[i, n + 3]
            for d in range(B.shape[1]):
                C[i, d] += a0 * B[n, d] + a1 * B[n + 1, d] + a2 * B[n + 2, d] + a3 * B[n + 3, d]
    for n in range(N4, N):
        for i in range(A.shape[0]):
            a = A[i, n]
            for d in range(B.shape[1]):
                C[i, d] += a * B[n, d]
