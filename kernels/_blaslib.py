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
Intel's, else OpenBLAS), ``openblas`` or ``mkl``. Under ``auto`` an MKL that fails to load
falls back to OpenBLAS (an MKL that cannot find its own libraries may instead end the
process with its own fatal message, which no ``except`` sees). MKL is loaded with
``RTLD_LOCAL`` and only into processes that import the kernels; PyTorch in the same process
would still see its layers (they bind globally), so the benchmark runs PyTorch in a process
of its own.
"""
from __future__ import annotations

import ctypes
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
    """The OpenBLAS SciPy loaded (threadpoolctl sees the loaded copy, by its folder)."""
    import scipy.linalg.cython_blas  # noqa: F401  (loads it)
    from threadpoolctl import threadpool_info

    libs = [lib["filepath"] for lib in threadpool_info()
            if lib.get("internal_api") == "openblas" and "scipy.libs" in lib["filepath"]]
    if not libs:
        raise RuntimeError("SciPy's OpenBLAS (scipy.libs/libscipy_openblas*.so) is not loaded; "
                           "the kernels need SciPy's PyPI wheel (see requirements.txt)")
    return os.path.realpath(libs[0])


def _intel_cpu() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return "GenuineIntel" in f.read(4096)
    except OSError:
        return False


def _bind_mkl(path: str) -> tuple[dict[str, int], str]:
    lib = ctypes.CDLL(path, mode=os.RTLD_LOCAL)
    # before any other MKL call; each returns the layer in effect, which is not the one asked
    # for when MKL was started earlier in this process (ILP64 would read our 32-bit ints
    # as 64-bit ones)
    if lib.MKL_Set_Interface_Layer(_MKL_INTERFACE_LP64) != _MKL_INTERFACE_LP64:
        raise OSError("MKL already runs with another interface layer than LP64 here")
    if lib.MKL_Set_Threading_Layer(_MKL_THREADING_SEQUENTIAL) != _MKL_THREADING_SEQUENTIAL:
        raise OSError("MKL already runs with another threading layer than sequential here")
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
            if name == "mkl":
                addr, version = _bind_mkl(path)
        except (OSError, AttributeError) as e:  # a broken MKL install: auto falls back
            if (requested or "auto").strip().lower() == "mkl":
                raise
            name, reason = "openblas", f"auto: mkl did not load ({e})"
        if name == "openblas":
            path = _openblas_path()
            addr, version = _bind_openblas(path)
        for kind, symbol in SYMBOLS.items():
            llvm.add_symbol(symbol, addr[kind])
        _BOUND = BlasLib(name, version, path, reason)
    return _BOUND


_BOUND: BlasLib | None = None
