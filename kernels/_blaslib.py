"""Which BLAS library the kernels' tile GEMMs call, bound once per process at import.

The jitted ``blas.gemm`` calls two symbols, ``attnviz_cblas_sgemm`` and
``attnviz_cblas_dgemm`` (CBLAS, 32-bit integers); this module points them at one library's
``cblas_?gemm`` with ``llvmlite.binding.add_symbol``. Because the kernels reference the
symbols by name, the on-disk JIT cache stays valid whichever library a process binds.

* ``openblas``: SciPy's OpenBLAS (``scipy_cblas_?gemm``), always present, pinned to one
  thread (``_config.limit_scipy_blas_to_one_thread``: the kernels are already parallel).
* ``mkl``: Intel's oneMKL from the ``mkl`` wheel (requirements.txt, on x86-64), with its
  sequential threading layer. On this machine's Xeon its single-thread 128x128 tile
  GEMMs ran 1.2-1.5x OpenBLAS's, which is the gap to PyTorch (whose CPU build uses MKL).

``ATTNVIZ_BLAS`` chooses: ``auto`` (default: MKL when it is installed and the CPU is
Intel's, else OpenBLAS), ``openblas`` or ``mkl``. MKL is loaded with ``RTLD_LOCAL`` and only
into processes that import the kernels; PyTorch in the same process would still see its
layers (they bind globally), so the benchmark runs PyTorch in a process of its own.
"""
from __future__ import annotations

import ctypes
import glob
import os
from dataclasses import dataclass
from importlib import metadata

CHOICES = ("auto", "openblas", "mkl")
SYMBOLS = {"s": "attnviz_cblas_sgemm", "d": "attnviz_cblas_dgemm"}
_MKL_THREADING_SEQUENTIAL = 1
_MKL_INTERFACE_LP64 = 0


@dataclass(frozen=True)
class BlasLib:
    """The library bound to the kernels' GEMM symbols."""

    name: str  # "openblas" or "mkl"
    version: str
    path: str
    reason: str  # why this one (the choice and what was available)

    def describe(self) -> str:
        return f"{self.name} {self.version}".strip()


def _mkl_path() -> str | None:
    """libmkl_rt from the installed ``mkl`` wheel, or None."""
    try:
        files = metadata.distribution("mkl").files or []
    except metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name.startswith("libmkl_rt.so"):
            return os.path.realpath(f.locate())
    return None


def _openblas_path() -> str:
    import scipy

    libs = glob.glob(os.path.join(os.path.dirname(scipy.__file__), os.pardir, "scipy.libs",
                                  "libscipy_openblas*.so*"))
    if not libs:
        raise RuntimeError("SciPy's OpenBLAS (scipy.libs/libscipy_openblas*.so) not found; "
                           "the kernels need SciPy's wheel (see requirements.txt)")
    return os.path.realpath(sorted(libs)[0])


def _intel_cpu() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return "GenuineIntel" in f.read(4096)
    except OSError:
        return False


def _bind_mkl(path: str) -> tuple[dict[str, int], str]:
    lib = ctypes.CDLL(path, mode=os.RTLD_LOCAL)
    lib.MKL_Set_Interface_Layer(_MKL_INTERFACE_LP64)  # before any other MKL call
    lib.MKL_Set_Threading_Layer(_MKL_THREADING_SEQUENTIAL)
    buf = ctypes.create_string_buffer(256)
    lib.MKL_Get_Version_String(buf, len(buf))
    text = buf.value.decode(errors="replace")  # "Intel(R) oneAPI ... Version 2026.2-Product"
    version = text.split("Version ", 1)[-1].split("-")[0].split(" ")[0]
    addr = {k: ctypes.cast(getattr(lib, f"cblas_{k}gemm"), ctypes.c_void_p).value
            for k in SYMBOLS}
    return addr, version


def _bind_openblas(path: str) -> tuple[dict[str, int], str]:
    lib = ctypes.CDLL(path, mode=os.RTLD_LOCAL)  # already loaded by SciPy: the same handle
    lib.scipy_openblas_get_config.restype = ctypes.c_char_p
    config = lib.scipy_openblas_get_config().decode(errors="replace")
    version = config.split()[1] if config.startswith("OpenBLAS") else ""
    addr = {k: ctypes.cast(getattr(lib, f"scipy_cblas_{k}gemm"), ctypes.c_void_p).value
            for k in SYMBOLS}
    return addr, version


def choose(requested: str | None = None) -> tuple[str, str | None, str]:
    """(library name, its path or None, reason) for ``ATTNVIZ_BLAS`` = ``requested``."""
    requested = (requested or "auto").strip().lower()
    if requested not in CHOICES:
        raise ValueError(f"ATTNVIZ_BLAS={requested!r}: choose one of {', '.join(CHOICES)}")
    mkl = _mkl_path()
    if requested == "mkl":
        if mkl is None:
            raise RuntimeError("ATTNVIZ_BLAS=mkl, but the mkl wheel is not installed "
                               "(requirements.txt installs it on x86-64)")
        return "mkl", mkl, "ATTNVIZ_BLAS=mkl"
    if requested == "openblas":
        return "openblas", None, "ATTNVIZ_BLAS=openblas"
    if mkl is not None and _intel_cpu():
        return "mkl", mkl, "auto: mkl installed, Intel CPU"
    return "openblas", None, ("auto: mkl not installed" if mkl is None
                              else "auto: not an Intel CPU")


def bind() -> BlasLib:
    """Bind the GEMM symbols to the chosen library (once; later calls return the same)."""
    global _BOUND
    if _BOUND is None:
        import llvmlite.binding as llvm

        requested = os.environ.get("ATTNVIZ_BLAS")
        name, path, reason = choose(requested)
        try:
            addr, version = (_bind_mkl if name == "mkl" else _bind_openblas)(
                path or _openblas_path())
        except (OSError, AttributeError) as e:  # a broken MKL install: auto falls back
            if name != "mkl" or reason.startswith("ATTNVIZ_BLAS"):
                raise
            name, path, reason = "openblas", None, f"auto: mkl did not load ({e})"
            addr, version = _bind_openblas(_openblas_path())
        path = path or _openblas_path()
        for kind, symbol in SYMBOLS.items():
            llvm.add_symbol(symbol, addr[kind])
        _BOUND = BlasLib(name, version, path, reason)
    return _BOUND


_BOUND: BlasLib | None = None
