"""Two small primitives that ``np.dot`` and NumPy views cannot give a jitted kernel.

* ``gemm(alpha, A, B, beta, C, trans_b, trans_a=False)``: C = alpha * op(A) @ op(B) +
  beta * C through BLAS ``sgemm``/``dgemm`` (op(X) = X^T when asked: the backward pass's
  P^T dO and dS^T Q read the stored tiles transposed, never copying them). ``np.dot``
  inside ``@njit`` always has alpha = 1 and beta = 0, so the online-softmax update paid
  two extra passes per tile: one to scale S, one to add P~ V into the accumulator. Here the
  scale rides in alpha and the accumulation in beta = 1.
* ``float_from_bits(b)``: reinterpret an int32 as the float32 with those bits. Scalar, so the
  exp loop that builds 2^k from its exponent bits stays one vectorizable loop.

``gemm`` calls CBLAS ``?gemm`` of the library ``_blaslib`` binds (SciPy's OpenBLAS or,
when installed, oneMKL) through a symbol name, so a kernel using it still loads from the
on-disk cache in a new process, whichever library that process binds. Under
``NUMBA_DISABLE_JIT=1`` the plain-Python bodies below run instead.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload, register_jitable

from . import _blaslib


def gemm(alpha, A, B, beta, C, trans_b, trans_a=False):
    """C = alpha * op(A) @ op(B) + beta * C, in place; op(A) = A.T if trans_a, op(B) = B.T if
    trans_b.

    A [M, K] ([K, M] if trans_a); B [N, K] if trans_b else [K, N]; C [M, N]; all float32 (or
    all float64) with rows stored contiguously (unit stride along the last axis; any row
    stride).
    """
    if not all(_rows_contiguous(X) for X in (A, B, C)):
        raise ValueError("gemm needs rows stored contiguously")
    AB = (A.T if trans_a else A) @ (B.T if trans_b else B)
    if beta == 0:
        C[...] = alpha * AB
    else:
        C[...] = alpha * AB + beta * C


def float_from_bits(b):
    """The float32 whose IEEE-754 bits are the int32 ``b``."""
    return np.array(b, np.int32).view(np.float32)[()]


_I32 = ir.IntType(32)
_VOIDP = ir.IntType(8).as_pointer()
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112  # CBLAS enums
_INT32_MAX = 2**31 - 1


@intrinsic
def _cblas_gemm(typingctx, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """Row-major CBLAS gemm, c = alpha * op(a) op(b) + beta * c, through the symbol that
    ``_blaslib`` bound to the chosen library (s or d by the arrays' dtype)."""
    dtype = c.dtype
    sig = types.void(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

    def codegen(context, builder, signature, args):
        ta, tb, m_, n_, k_, al, a_, lda_, b_, ldb_, be, c_, ldc_ = args
        ll_dtype = context.get_value_type(dtype)
        fnty = ir.FunctionType(ir.VoidType(), [_I32, _I32, _I32, _I32, _I32, _I32, ll_dtype,
                                               _VOIDP, _I32, _VOIDP, _I32, ll_dtype, _VOIDP,
                                               _I32])
        name = _blaslib.SYMBOLS["s" if dtype == types.float32 else "d"]
        fn = cgutils.get_or_insert_function(builder.module, fnty, name)

        def data(ty, val):
            return builder.bitcast(context.make_array(ty)(context, builder, val).data, _VOIDP)

        def i32(val, ty):
            return builder.trunc(context.cast(builder, val, ty, types.int64), _I32)

        def op(flag, ty):  # CblasTrans if flag else CblasNoTrans
            return builder.select(builder.icmp_unsigned("!=", context.cast(
                builder, flag, ty, types.boolean), ir.Constant(ir.IntType(1), 0)),
                ir.Constant(_I32, _TRANS), ir.Constant(_I32, _NO_TRANS))

        builder.call(fn, (ir.Constant(_I32, _ROW_MAJOR), op(ta, trans_a), op(tb, trans_b),
                          i32(m_, m), i32(n_, n), i32(k_, k),
                          context.cast(builder, al, alpha, dtype), data(a, a_), i32(lda_, lda),
                          data(b, b_), i32(ldb_, ldb),
                          context.cast(builder, be, beta, dtype), data(c, c_), i32(ldc_, ldc)))
        return context.get_dummy_value()

    return sig, codegen


@register_jitable
def _rows_contiguous(X):
    """Unit stride along each row (vacuous for an empty matrix or one column)."""
    return X.size == 0 or X.shape[1] == 1 or X.strides[1] == X.itemsize


@register_jitable
def _ld(X):
    """Leading dimension of a row-major matrix: its row stride in elements (BLAS wants it
    >= the row length even where it is unused, e.g. a single row)."""
    return max(X.strides[0] // X.itemsize, X.shape[1], 1)


@overload(gemm, jit_options={"cache": True})
def _gemm_jit(alpha, A, B, beta, C, trans_b, trans_a=False):
    def impl(alpha, A, B, beta, C, trans_b, trans_a=False):
        M, N = C.shape
        K = A.shape[0] if trans_a else A.shape[1]
        if not (_rows_contiguous(A) and _rows_contiguous(B) and _rows_contiguous(C)):
            raise ValueError("gemm needs rows stored contiguously")
        if M == 0 or N == 0:
            return
        if K == 0:  # an empty product: BLAS would still read the (absent) operands
            if beta == 0.0:
                C[:] = 0.0
            else:
                C *= beta
            return
        lda, ldb, ldc = _ld(A), _ld(B), _ld(C)
        if max(M, N, K, lda, ldb, ldc) > _INT32_MAX:  # CBLAS takes 32-bit ints
            raise ValueError("gemm: a dimension or row stride is above 2**31 - 1")
        _cblas_gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)

    return impl


@intrinsic
def _bitcast_i32_f32(typingctx, b):
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


@overload(float_from_bits, inline="always", jit_options={"cache": True})
def _float_from_bits_jit(b):
    def impl(b):
        return _bitcast_i32_f32(np.int32(b))

    return impl
