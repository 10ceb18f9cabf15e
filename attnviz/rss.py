"""Measured memory of this process (Linux): resident set size and its peak.

The peak (``VmHWM``) can be reset to the current RSS by writing 5 to
``/proc/self/clear_refs`` (Linux >= 4.0), so one process can measure many calls one after
the other: peak during the call minus RSS right before it. Where the reset is not allowed,
``reset_peak`` says so and callers fall back (one fresh process per call).
"""
from __future__ import annotations


def status_bytes(key: str) -> int | None:
    """A ``/proc/self/status`` field such as "VmRSS" or "VmHWM", in bytes (None if absent)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024  # the file counts kB
    except OSError:
        return None
    return None


def reset_peak() -> bool:
    """Set the peak RSS (VmHWM) to the current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_extra_bytes(fn):
    """(fn(), resident bytes above the level before the call, at its peak; None if unknown)."""
    base = status_bytes("VmRSS")
    ok = base is not None and reset_peak()
    out = fn()
    peak = status_bytes("VmHWM") if ok else None
    return out, (max(0, peak - base) if peak is not None else None)
