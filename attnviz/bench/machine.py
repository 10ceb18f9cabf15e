"""The machine itself: its roofs (GEMM throughput, read bandwidth), how fast a new process
gets its first result, how much of it other jobs took, its threads, and its description.

Nothing here prints; every function returns numbers.
"""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

import numpy as np

from ..contention import cpu_snapshot, other_cores  # noqa: F401  (the bench's names)

ROOT = Path(__file__).resolve().parents[2]  # the folder holding attnviz/ and kernels/


class GemmProbe:
    """One float32 n^3 matmul with NumPy's BLAS (all its threads): 2 n^3 FLOPs, the ceiling
    attention's two GEMMs can reach."""

    def __init__(self, n: int = 2048):
        rng = np.random.default_rng(1)
        self.n = n
        self.flops = 2 * n**3
        self.a = rng.standard_normal((n, n), dtype=np.float32)
        self.b = rng.standard_normal((n, n), dtype=np.float32)
        self.c = np.empty((n, n), np.float32)

    def __call__(self) -> None:
        np.matmul(self.a, self.b, out=self.c)


class ReadProbe:
    """One read of every byte of float32 data on ``threads`` threads: what split-KV decode is
    bound by. The data is ``arrays`` when given (a decode case's own K and V: the same pages,
    the same cache state as the kernel's reads; a fresh array's speed here varied 37-63 GB/s
    between processes), else a new array of ``nbytes`` (far above the caches).

    The read is the fastest of those at hand, picked at construction (best of 2 passes each):
    NumPy's ``np.max`` split across Python threads (NumPy releases the GIL in reductions),
    and, with ``torch=True``, torch's ``max`` on its own thread pool. ``reader`` names it."""

    def __init__(self, nbytes: int = 2**30, threads: int | None = None, torch: bool = False,
                 arrays: tuple = ()):
        self.threads = threads or os.cpu_count() or 1
        # a new array is written once: every page is resident
        self.arrays = [a.reshape(-1) for a in arrays] or [np.ones(nbytes // 4, np.float32)]
        self.nbytes = sum(a.nbytes for a in self.arrays)
        self.parts = [p for a in self.arrays for p in np.array_split(a, self.threads)]
        self.pool = ThreadPoolExecutor(self.threads)
        reads = {"np.max": self._numpy_read}
        if torch:
            reads.update(_torch_read(self.arrays))
        best = {name: min(_best_of(read, 2)) for name, read in reads.items()}
        self.reader = min(best, key=best.get)
        self._read = reads[self.reader]

    def _numpy_read(self) -> None:
        list(self.pool.map(np.max, self.parts))

    def __call__(self) -> None:
        self._read()

    def close(self) -> None:
        self.pool.shutdown()
        del self.arrays, self.parts, self._read


def _torch_read(arrays: list) -> dict:
    """{"torch max": a read of ``arrays`` (shared, not copied) by torch}, or {} without it."""
    try:
        import torch
    except ImportError:
        return {}
    tensors = [torch.from_numpy(a) for a in arrays]
    return {"torch max": lambda: [t.max() for t in tensors]}


def _best_of(call, repeats: int) -> list[float]:
    call()  # warm-up: threads started, pages touched
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t0)
    return samples


def gemm_roof(n: int = 2048, repeats: int = 5) -> dict:
    """GEMM roof in GFLOP/s: best of ``repeats`` ``GemmProbe`` calls."""
    probe = GemmProbe(n)
    samples = _best_of(probe, repeats)
    return {"n": n, "gflops": probe.flops / min(samples) / 1e9, "samples_s": samples}


def read_bandwidth(nbytes: int = 2**30, threads: int | None = None, repeats: int = 5,
                   torch: bool = False) -> dict:
    """Memory read bandwidth in GB/s (1e9 B/s): best of ``repeats`` ``ReadProbe`` passes
    (``torch``: let torch's read compete)."""
    probe = ReadProbe(nbytes, threads, torch)
    try:
        samples = _best_of(probe, repeats)
    finally:
        probe.close()
    return {"bytes": probe.nbytes, "threads": probe.threads, "reader": probe.reader,
            "gbps": probe.nbytes / min(samples) / 1e9, "samples_s": samples}


def cold_start_seconds(runs: int = 3) -> dict:
    """New Python processes, one after the other: import the kernels (warm Numba cache) and
    get one streaming result. ``in_process_s`` counts from before ``import kernels``;
    ``wall_s`` also counts the interpreter's start. Medians of ``runs`` (a single start on
    this shared VM ranged 0.7-1.1 s), with every run in ``runs_in_process_s``."""
    code = ("import time; t0 = time.perf_counter()\n"
            "import numpy as np; from kernels import streaming_attention\n"
            "q = np.ones((1, 2, 64, 64), np.float32); streaming_attention(q, q, q)\n"
            "print(time.perf_counter() - t0)")
    inside, wall = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=child_env(), check=True)
        wall.append(time.perf_counter() - t0)
        inside.append(float(out.stdout.strip().splitlines()[-1]))
    return {"in_process_s": statistics.median(inside), "wall_s": statistics.median(wall),
            "runs_in_process_s": inside}


def set_threads(n: int) -> None:
    """Run every contender on ``n`` threads: Numba's workers, torch's pool, NumPy's BLAS.
    SciPy's BLAS (np.dot inside @njit) stays at 1 thread per Numba worker."""
    import numba
    from threadpoolctl import ThreadpoolController

    from . import torchworker

    numba.set_num_threads(n)
    torchworker.threads(n)
    for lib in ThreadpoolController().lib_controllers:
        if lib.user_api == "blas" and "scipy.libs" not in lib.filepath:
            lib.set_num_threads(n)


def child_env() -> dict:
    """The environment for subprocesses, with this package importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "kernels", "attnviz"],
                               cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def machine_info() -> dict:
    """CPU, cores, RAM, library versions and the thread settings every contender runs with.
    Call after a parallel kernel has run (Numba reports its threading layer only then)."""
    import numba
    import psutil
    from threadpoolctl import threadpool_info

    from kernels import BLAS
    from kernels.tuning import cpu_model

    blas = []
    for lib in threadpool_info():
        if lib.get("user_api") != "blas":
            continue
        owner = "scipy (np.dot inside @njit)" if "scipy.libs" in lib["filepath"] else (
            "numpy" if "numpy" in lib["filepath"] else Path(lib["filepath"]).parent.name)
        if os.path.realpath(lib["filepath"]) == BLAS.path:
            owner = "kernels' tile GEMMs" + (" and " + owner if "scipy" in owner else "")
        blas.append({"owner": owner, "api": lib.get("internal_api"),
                     "version": lib.get("version"), "arch": lib.get("architecture"),
                     "threads": lib.get("num_threads")})
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        layer = numba.config.THREADING_LAYER
    info = {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "ram_bytes": psutil.virtual_memory().total,
        "ram_available_bytes": psutil.virtual_memory().available,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {d: _version(d) for d in ("numpy", "numba", "llvmlite", "scipy", "torch")},
        "numba_threads": numba.get_num_threads(),
        "numba_threading_layer": layer,
        "blas": blas,
        "torch_threads": None,
        "git": _git_commit(),
        "loadavg": list(os.getloadavg()),
        "dtype": "float32",
        "check_finite": False,
    }
    from . import torchworker
    from .contenders import torch_in_process

    info["kernel_blas"] = {"name": BLAS.name, "version": BLAS.version, "reason": BLAS.reason}
    from kernels import tuning_summary

    info["tuning"] = tuning_summary()  # the kernels' per-host choices in force (autotune)
    info["torch_threads"] = torchworker.threads()
    info["torch_process"] = "the same" if torch_in_process() else "its own (torchworker.py)"
    return info
