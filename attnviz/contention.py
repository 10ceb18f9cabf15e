"""How much of the machine other processes took while we measured (Linux ``/proc/stat``).

A timing on a shared machine is only as good as the cores it had. ``cpu_snapshot`` reads the
whole machine's busy CPU time and this process's own; between two snapshots,
``other_cores`` is the CPU other processes (or the hypervisor: steal) used, in cores. The
bench records it per case; the timing panel says it beside its numbers (``describe``).

Threads of this process (other browser sessions of the same server) count as our own here:
the timing queue (``attnviz.runqueue``) keeps timed runs from sharing the cores with each
other, and a session's step view costs little CPU.
"""
from __future__ import annotations

import os
import time

# Other processes' use, in cores, from which the panel calls the machine busy: below it,
# background daemons and a browser's idle tick (~0.05-0.15 cores here)
BUSY_CORES = 0.25


def cpu_snapshot() -> tuple[float, float, float] | None:
    """(wall s, CPU s busy on the whole machine, CPU s used by this process and its waited-for
    children), to tell how much of the machine other jobs took meanwhile (``other_cores``)."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal ...: all but idle and iowait are busy
    busy = sum(ticks[:8]) - ticks[3] - ticks[4]
    t = os.times()
    own = t.user + t.system + t.children_user + t.children_system
    return time.perf_counter(), busy / os.sysconf("SC_CLK_TCK"), own


def other_cores(start, end) -> float | None:
    """Cores' worth of CPU other processes (or the hypervisor: steal) used between two
    ``cpu_snapshot``s. On a shared 2-core machine, 1.0 means our 2 threads had ~1 core."""
    if start is None or end is None or end[0] <= start[0]:
        return None
    return max(0.0, ((end[1] - start[1]) - (end[2] - start[2])) / (end[0] - start[0]))


def is_busy(other: float | None) -> bool:
    return other is not None and other >= BUSY_CORES


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
    if threads + other > cores:
        # fair share: our threads and the others' ran on `cores` cores between them
        slower = (threads + other) / cores
        effect = (f"our {threads} thread{'s' * (threads > 1)} shared the cores with them, so "
                  f"the times are longer than on an idle machine (by roughly {slower:.1f}x if "
                  "the cores were shared evenly) and noisier; the min is the least disturbed "
                  "figure")
    else:
        effect = ("cores were left for our threads, but shared caches and memory bandwidth "
                  "were not: the times may be a little longer and noisier; the min is the "
                  "least disturbed figure")
    return f"Busy machine: other processes used {share} while measuring; {effect}."
