"""How much of the machine other processes took while we measured (Linux ``/proc/stat``).

A timing on a shared machine is only as good as the cores it had, and so is a tuning: the
autotune records this beside its choices (``kernels.tuning``), the bench per case, the
timing panel beside its numbers (``attnviz.contention`` words it for people).
``cpu_snapshot`` reads the whole machine's busy CPU time and this process's own; between two
snapshots, ``other_cores`` is the CPU other processes (or the hypervisor: steal) used, in
cores.
"""
from __future__ import annotations

import os
import time

# Other processes' use, in cores, from which a measurement counts as taken on a busy
# machine: below it, background daemons and a browser's idle tick (~0.05-0.15 cores here)
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


def others_now(seconds: float = 0.5) -> float | None:
    """Other processes' CPU use over the next ``seconds`` (this process sleeps meanwhile)."""
    start = cpu_snapshot()
    time.sleep(seconds)
    return other_cores(start, cpu_snapshot())
