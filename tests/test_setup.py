"""What a new user meets before the app: the install, the JIT cache, the Makefile's defaults.

These run real commands (a new Python process, ``make -n``) rather than reading files, so
they fail where a user would.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kernels import _config

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, cwd: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **env})


def test_both_packages_import_from_any_folder(tmp_path):
    """`pip install -e .` (what `make` runs) puts attnviz and kernels on the path."""
    done = _python("import attnviz, kernels; print(kernels.__file__); print(attnviz.__file__)",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    files = [Path(line) for line in done.stdout.split()]
    assert [f.parent.parent for f in files] == [ROOT, ROOT]


def test_one_cache_folder_whatever_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("ATTNVIZ_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    assert _config._default_cache_root() == tmp_path / "xdg" / "attnviz" / "numba"
    monkeypatch.setenv("ATTNVIZ_CACHE_DIR", str(tmp_path / "mine"))
    assert _config._default_cache_root() == tmp_path / "mine"


def test_a_new_cache_says_once_that_the_kernels_compile(tmp_path):
    env = {"ATTNVIZ_CACHE_DIR": str(tmp_path / "cache")}
    first = _python("import kernels", cwd=ROOT, **env)
    assert first.returncode == 0, first.stderr
    assert "compiling the Numba kernels on first use" in first.stderr
    again = _python("import kernels", cwd=ROOT, **env)
    assert again.returncode == 0, again.stderr
    assert "compiling" not in again.stderr


def test_stale_cache_folders_of_other_sources_are_pruned(tmp_path):
    keep, stale, recent = tmp_path / "keep", tmp_path / "stale", tmp_path / "recent"
    for folder in (keep, stale, recent):
        folder.mkdir()
    old = 40 * 86400
    os.utime(stale, (stale.stat().st_atime - old, stale.stat().st_mtime - old))
    os.utime(keep, (keep.stat().st_atime - old, keep.stat().st_mtime - old))
    _config._prune_stale(tmp_path, keep)
    assert keep.exists() and recent.exists() and not stale.exists()


def _make_dry_run(*args: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    done = subprocess.run(["make", "-n", "-s", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_run_serves_localhost_unless_asked():
    assert "--server.address 127.0.0.1 --server.port 8501" in _make_dry_run("run")
    wide = _make_dry_run("run", "ADDRESS=0.0.0.0", "PORT=8600")
    assert "--server.address 0.0.0.0 --server.port 8600" in wide


def test_mkl_is_installed_only_on_intel_cpus():
    """The ~700 MB of oneMKL only where the kernels bind it (kernels/_blaslib.py)."""
    plan = _make_dry_run("-B", ".venv/.runtime")
    intel = "GenuineIntel" in Path("/proc/cpuinfo").read_text()
    assert ("-r requirements-mkl.txt" in plan) == intel
    assert "-e ." in plan
