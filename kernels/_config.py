"""Numba settings for every kernel, in one place, applied before anything is compiled.

* Cache: ``cache=True`` keys a cached kernel on its own file only, so an edit in a helper it
  calls from another file would load a stale binary. We point Numba's cache at a folder named
  after a hash of all kernel sources: any edit in ``kernels/`` starts a fresh cache. The
  folder is the same for ``make run``, the tests and plain Python (``~/.cache/attnviz/numba``,
  or ``$ATTNVIZ_CACHE_DIR``), so a kernel compiled once is loaded everywhere after. When the
  folder is new, a log line (stderr, unless logging is configured) says that the first calls
  compile; folders of other kernel sources unused for 30 days are removed.
* Threading layer: Streamlit serves each browser session from its own thread, and Numba's
  ``workqueue`` layer aborts the process when two threads launch parallel kernels at once.
  We ask for a thread-safe layer (OpenMP here; needs Debian's ``libgomp1``).
* BLAS: ``np.dot`` inside ``@njit`` calls SciPy's OpenBLAS. Each Numba worker runs its own
  tile GEMMs, so that BLAS must run on one thread or the two pools oversubscribe the cores.
* fastmath: everything but ``nnan``/``ninf`` -- online softmax starts from ``-inf``.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from pathlib import Path

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

_KERNEL_DIR = Path(__file__).resolve().parent
_STALE_S = 30 * 86400  # a cache folder of other kernel sources unused this long is removed
_NOT_NUMBA = {"autotune"}  # folders under the cache root that are not Numba's

log = logging.getLogger("attnviz")


# Files without jitted code: editing them must not throw away the compiled kernels.
_NOT_JITTED = {"tuning.py", "autotune.py"}


def _source_hash() -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in _KERNEL_DIR.glob("*.py") if p.name not in _NOT_JITTED):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def cache_root() -> Path:
    """Where attnviz keeps what it computes once per machine: ``$ATTNVIZ_CACHE_DIR``, else
    ``~/.cache/attnviz`` (``$XDG_CACHE_HOME`` honoured). Numba's folders and the autotune's
    ``autotune/`` folder (``kernels/tuning.py``) live under it."""
    if os.environ.get("ATTNVIZ_CACHE_DIR"):
        return Path(os.environ["ATTNVIZ_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "attnviz"


def _default_cache_root() -> Path:
    """The folder of Numba's per-source cache folders: the cache root itself when
    ``$ATTNVIZ_CACHE_DIR`` is set, else ``~/.cache/attnviz/numba``."""
    root = cache_root()
    return root if os.environ.get("ATTNVIZ_CACHE_DIR") else root / "numba"


def _prune_stale(root: Path, keep: Path) -> None:
    """Remove cache folders of other kernel sources that nobody used for ``_STALE_S``."""
    now = time.time()
    for folder in root.iterdir():
        try:
            if (folder != keep and folder.name not in _NOT_NUMBA and folder.is_dir()
                    and now - folder.stat().st_mtime > _STALE_S):
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass  # another process removed or is using it: not ours to fight over


def configure_numba() -> None:
    """Set cache folder and threading layer; must run before the kernels are decorated."""
    root = _default_cache_root()
    cache_dir = root / _source_hash()
    fresh = not cache_dir.is_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    os.utime(cache_dir)  # marks it used (see _prune_stale)
    os.environ.setdefault("NUMBA_THREADING_LAYER", "omp")
    import numba  # noqa: E402  (imported after the environment is set)

    if fresh:
        _prune_stale(root, cache_dir)
        if not numba.config.DISABLE_JIT:
            log.warning("attnviz: compiling the Numba kernels on first use, once (~20-60 s); "
                        "later runs load them from %s", cache_dir)
    numba.config.CACHE_DIR = str(cache_dir)
    if numba.config.THREADING_LAYER == "default":
        numba.config.THREADING_LAYER = os.environ["NUMBA_THREADING_LAYER"]


def limit_scipy_blas_to_one_thread() -> None:
    """Pin SciPy's OpenBLAS (the one ``np.dot`` uses inside ``@njit``, and the kernels' tile
    GEMMs unless ``_blaslib`` bound MKL) to one thread.

    NumPy's own BLAS is left alone, so the NumPy baseline keeps all cores. SciPy's BLAS must be
    loaded first, or threadpoolctl cannot see it.
    """
    import scipy.linalg.cython_blas  # noqa: F401  (loads scipy's OpenBLAS)
    from threadpoolctl import ThreadpoolController

    controller = ThreadpoolController()
    # NumPy's wheel ships a library called libscipy_openblas64_ too: select by folder.
    scipy_blas = [lib for lib in controller.lib_controllers if "scipy.libs" in lib.filepath]
    for lib in scipy_blas:
        lib.set_num_threads(1)
