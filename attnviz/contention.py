"""How much of the machine other processes took while we measured, in words for people.

A timing on a shared machine is only as good as the cores it had. ``kernels.hostload``
measures it (``cpu_snapshot``, ``other_cores``: other processes' CPU use in cores, from
``/proc/stat``); the bench records it per case, and the timing panel says it beside its
numbers (``describe``).

Threads of this process (other browser sessions of the same server) count as our own here:
the timing queue (``attnviz.runqueue``) keeps timed runs from sharing the cores with each
other, and a session's step view costs little CPU.
"""
from __future__ import annotations

import os

# the measuring itself lives with the kernels (the autotune records it too); re-exported here
from kernels.hostload import BUSY_CORES, cpu_snapshot, is_busy, other_cores  # noqa: F401


def describe(other: float | None, threads: int, cores: int | None = None) -> str:
    """One plain sentence for beside the numbers: how busy the machine was while they were
    measured, and what that does to them."""
    cores = cores or os.cpu_count() or 1
    if other is None:
        return ("Other processes' CPU use could not be read (/proc/stat): these figures may "
                "include time the cores spent on other work.")
    share = f"{other:.2f} of this machine's {cores} cores"
    if not is_busy(other):
        return f"The machine was quiet while measuring: other processes used {share}."
    slower = (threads + other) / cores  # fair share: ours and theirs on `cores` cores
    if slower >= 1.1:  # below that, "longer by 1.0x" would say nothing
        effect = (f"our {threads} thread{'s' * (threads > 1)} shared the cores with them, so "
                  f"the times are longer than on an idle machine (by roughly {slower:.1f}x if "
                  "the cores were shared evenly) and noisier; the min is the least disturbed "
                  "figure")
    else:
        left = "almost all the cores" if threads + other > cores else "the cores"
        effect = (f"{left} our threads needed were left to them, but shared caches and memory "
                  "bandwidth were not: the times may be a little longer and noisier; the min "
                  "is the least disturbed figure")
    return f"Busy machine: other processes used {share} while measuring; {effect}."
