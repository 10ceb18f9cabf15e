"""Two small primitives that ``np.dot`` and NumPy views cannot give a jitted kernel.

* ``gemm(alpha, A, B, beta, C, trans_b)``: C = alpha * A @ op(B) + beta * C through BLAS
  ``sgemm``/``dgemm``. ``np.dot`` inside ``@njit`` always has alpha = 1 and beta = 0, so the
  online-softmax update paid two extra passes per tile: one to scale S, one to add P~ V into
  the accumulator. Here the scale rides in alpha and the accumulation in beta = 1.
* ``float_from_bits(b)``: reinterpret an int32 as the float32 with those bits. Scalar, so the
  exp loop that builds 2^k from its exponent bits stays one vectorizable loop.

Both call into code Numba already ships: ``numba_xxgemm`` is Numba's C helper behind
``np.dot`` (it finds SciPy's ``cython_blas`` at run time), referenced by symbol name, so a
kernel using it still loads from the on-disk cache in a new process. Under
``NUMBA_DISABLE_JIT=1`` the plain-Python bodies below run instead.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload, register_jitable
from numba.np.linalg import ensure_blas


def gemm(alpha, A, B, beta, C, trans_b):
    """C = alpha * A @ (B.T if trans_b else B) + beta * C, in place.

    A [M, K]; B [N, K] if trans_b else [K, N]; C [M, N]; all float32 (or all float64) with
    rows stored contiguously (unit stride along the last axis; any row stride).
    """
    if not all(_rows_contiguous(X) for X in (A, B, C)):
        raise ValueError("gemm needs rows stored contiguously")
    AB = A @ (B.T if trans_b else B)
    if beta == 0:
        C[...] = alpha * AB
    else:
        C[...] = alpha * AB + beta * C


def float_from_bits(b):
    """The float32 whose IEEE-754 bits are the int32 ``b``."""
    return np.array(b, np.int32).view(np.float32)[()]


_CHAR = ir.IntType(8)
_VOIDP = ir.IntType(8).as_pointer()


@intrinsic
def _xxgemm(typingctx, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """Column-major BLAS gemm on the data pointers of arrays a, b, c (Fortran semantics:
    c = alpha * op(a) op(b) + beta * c with leading dimensions lda, ldb, ldc)."""
    dtype = c.dtype
    sig = types.int32(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

    def codegen(context, builder, signature, args):
        ta, tb, m_, n_, k_, al, a_, lda_, b_, ldb_, be, c_, ldc_ = args
        intp = context.get_value_type(types.intp)
        fnty = ir.FunctionType(ir.IntType(32), [_CHAR, _CHAR, _CHAR, intp, intp, intp,
                                                _VOIDP, _VOIDP, intp, _VOIDP, intp, _VOIDP,
                                                _VOIDP, intp])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "numba_xxgemm")
        ll_dtype = context.get_value_type(dtype)
        al_slot = cgutils.alloca_once_value(builder, context.cast(builder, al, alpha, dtype))
        be_slot = cgutils.alloca_once_value(builder, context.cast(builder, be, beta, dtype))
        assert al_slot.type.pointee == ll_dtype

        def data(ty, val):
            return builder.bitcast(context.make_array(ty)(context, builder, val).data, _VOIDP)

        def char(ty, val):
            return builder.trunc(context.cast(builder, val, ty, types.intp), _CHAR)

        kind = ir.Constant(_CHAR, ord("s" if dtype == types.float32 else "d"))
        cast = [context.cast(builder, v, t, types.intp)
                for v, t in ((m_, m), (n_, n), (k_, k), (lda_, lda), (ldb_, ldb), (ldc_, ldc))]
        return builder.call(fn, (kind, char(trans_a, ta), char(trans_b, tb), cast[0], cast[1],
                                 cast[2], builder.bitcast(al_slot, _VOIDP), data(a, a_), cast[3],
                                 data(b, b_), cast[4], builder.bitcast(be_slot, _VOIDP),
                                 data(c, c_), cast[5]))

    return sig, codegen


@register_jitable
def _rows_contiguous(X):
    """Unit stride along each row (vacuous for an empty matrix or one column)."""
    return X.size == 0 or X.shape[1] == 1 or X.strides[1] == X.itemsize


@register_jitable
def _ld(X):
    """Leading dimension of a row-major matrix seen column-major: its row stride in elements
    (BLAS wants it >= the row length even where it is unused, e.g. a single row)."""
    return max(X.strides[0] // X.itemsize, X.shape[1], 1)


@overload(gemm, jit_options={"cache": True})
def _gemm_jit(alpha, A, B, beta, C, trans_b):
    ensure_blas()
    N_CHAR, T_CHAR = ord("n"), ord("t")

    def impl(alpha, A, B, beta, C, trans_b):
        M, K = A.shape
        N = C.shape[1]
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
        # Row-major C = A op(B) is column-major C^T = op(B)^T A^T: pass B first, as numpy does.
        status = _xxgemm(T_CHAR if trans_b else N_CHAR, N_CHAR, N, M, K, alpha,
                         B, _ld(B), A, _ld(A), beta, C, _ld(C))
        if status != 0:
            raise RuntimeError("BLAS gemm failed (is SciPy installed?)")

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
