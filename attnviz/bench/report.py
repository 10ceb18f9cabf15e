"""Turning results into words: the machine description, derived metrics, text, Markdown, JSON.

Pure functions of measured data; the CLI decides what to print where.
"""
from __future__ import annotations

import math

from .cases import attention_flops
from .measure import Result
from .sweep import Sweep

SCHEMA = "attnviz.bench/1"
MiB = 2**20

COLUMNS = (
    "Columns: *time* is the median per-call time over round-robin rounds (JIT excluded); "
    "*GFLOP/s* counts 4·D FLOPs per (query, key) pair the mask lets through; *% roof* and "
    "*% bw* divide by the GEMM roof / read bandwidth timed in the same rounds as the case "
    "(listed under each table; decode's is the fastest read of the case's own K and V); "
    "*x torch* is time / torch SDPA's time on the same case (< 1 is "
    "faster); *peak* is the measured peak extra RSS of one call in a fresh process, *model* the "
    "prediction of `attnviz/memory.py`; *err* is max |O - O_ref| / max |O_ref| against the "
    "float64 oracle; *spread* is (slowest - fastest round) / median. Decode's *K/V GB/s* counts "
    "K and V read once per KV head (above the read bandwidth when they fit in cache)."
)


# --- the machine -------------------------------------------------------------------------------

def describe_machine(m: dict) -> list[str]:
    """The machine as a few lines of text."""
    v = m["versions"]
    blas = "; ".join(f"{b['owner']}: {b['api']} {b['version']} {b['arch'] or ''}, {b['threads']} "
                     f"thread{'s' * (b['threads'] != 1)}" for b in m["blas"])
    lines = [
        f"CPU: {m['cpu']}, {m['logical_cores']} logical cores ({m['physical_cores']} physical), "
        f"RAM {m['ram_bytes'] / 2**30:.1f} GiB ({m['ram_available_bytes'] / 2**30:.1f} free)",
        f"Python {m['python']}, numpy {v['numpy']}, numba {v['numba']} (llvmlite "
        f"{v['llvmlite']}), scipy {v['scipy']}, torch {v['torch'] or 'not installed'}",
        f"Threads: Numba {m['numba_threads']} ({m['numba_threading_layer']} layer)"
        + (f", torch {m['torch_threads']}" if m["torch_threads"] else "") + f"; BLAS: {blas}",
        *([f"Kernel tile GEMMs: {kb['name']} {kb['version']} ({kb['reason']}); torch runs in "
           f"{m.get('torch_process', 'the same')} process"]
          if (kb := m.get("kernel_blas")) else []),
        *([f"Kernel choices: {t['text']}"] if (t := m.get("tuning")) else []),
        f"dtype {m['dtype']}; Numba kernels called with check_finite=False (their NaN/Inf scan "
        "of the inputs is not timed)",
        f"git {m['git']}; load average at start {' '.join(f'{x:.2f}' for x in m['loadavg'])}",
    ]
    if m.get("other_cores") is not None:
        lines.append(f"Other jobs on this machine used {m['other_cores']:.2f} of its "
                     f"{m['logical_cores']} cores on average during the run (/proc/stat minus "
                     "this benchmark): timings are only comparable within the run")
    return lines


# --- derived metrics -----------------------------------------------------------------------------

def metrics(results: list[Result], roof_gflops: float | None, bandwidth_gbps: float | None
            ) -> list[dict]:
    """One flat dict per result: the raw record plus GFLOP/s, fraction of the GEMM roof,
    time relative to torch on the same case, K/V GB/s and fraction of read bandwidth.

    The roof and bandwidth are those timed in the case's own rounds when there are any, else
    the run's (``roof_gflops``, ``bandwidth_gbps``)."""
    torch_s = {r.case: r.median_s for r in results if r.contender == "torch" and r.median_s}
    rows = []
    for r in results:
        t, ts = r.median_s, torch_s.get(r.case)
        rows.append({
            "case": r.case.to_dict(),
            "contender": r.contender,
            "label": r.label,
            "status": r.status,
            "reason": r.reason,
            "median_s": t,
            "times_s": r.times_s,
            # (slowest - fastest round) / median: how noisy the machine was for this result
            "spread": (max(r.times_s) - min(r.times_s)) / t if len(r.times_s) > 1 else None,
            "calls_per_sample": r.calls_per_sample,
            "first_call_s": r.first_call_s,
            "flops": r.flops,
            "gflops": r.gflops,
            "roof_gflops": r.roof_gflops or roof_gflops,
            "roof_fraction": r.gflops / (r.roof_gflops or roof_gflops)
            if t and (r.roof_gflops or roof_gflops) else None,
            "vs_torch": t / ts if t and ts else None,
            "kv_bytes": r.kv_bytes,
            "gbps": r.gbps,
            "bandwidth_gbps": r.bandwidth_gbps or bandwidth_gbps,
            "bandwidth_fraction": r.gbps / (r.bandwidth_gbps or bandwidth_gbps)
            if t and (r.bandwidth_gbps or bandwidth_gbps) else None,
            "oracle_err": _finite(r.oracle_err),
            "oracle_rows": r.oracle_rows,
            "cross_err": _finite(r.cross_err),
            "cross_with": r.cross_with,
            "predicted_bytes": r.predicted_bytes,
            "measured_bytes": r.measured_bytes,
            "memory_note": r.memory_note,
            "other_cores": r.other_cores,
        })
    return rows


def _finite(x):
    """JSON has no inf/NaN: None stands for 'not finite' (a NaN output)."""
    return x if x is None or math.isfinite(x) else None


def to_json(machine: dict, config: dict, roof: dict | None, bandwidth: dict | None,
            cold_start: dict | None, rows: list[dict], sweeps: list[Sweep]) -> dict:
    return {"schema": SCHEMA, "machine": machine, "config": config, "roof": roof,
            "bandwidth": bandwidth, "cold_start": cold_start, "results": rows,
            "sweeps": [s.to_dict() for s in sweeps]}


# --- tables -------------------------------------------------------------------------------------

def _f(x, fmt: str, none: str = "-") -> str:
    return none if x is None else format(x, fmt)


def _ms(t: float | None) -> str:
    if t is None:
        return "-"
    ms = t * 1e3
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.0f}"


def _mib(x: int | None) -> str:
    return "-" if x is None else f"{x / MiB:.1f}" if x < 100 * MiB else f"{x / MiB:.0f}"


def _size(c: dict) -> str:
    """The shape columns of a case, without what the section header already says."""
    Lq, Lk = c["Lq"], c["Lk"]
    L = f"{Lk}" if Lq in (1, Lk) else f"{Lq}x{Lk}"
    return f"L={L} D={c['D']}"


def _time_cell(row: dict) -> str:
    return _ms(row["median_s"]) if row["status"] == "ok" else row["status"].upper()


def _row_cells(row: dict, decode: bool) -> list[str]:
    cells = [_time_cell(row)]
    if decode:
        cells += [_f(row["gbps"], ".1f"), _f(row["bandwidth_fraction"] and
                                             100 * row["bandwidth_fraction"], ".0f")]
    else:
        cells += [_f(row["gflops"], ".1f"), _f(row["roof_fraction"] and
                                               100 * row["roof_fraction"], ".0f")]
    cells += [_f(row["vs_torch"], ".2f"), _mib(row["measured_bytes"]),
              _mib(row["predicted_bytes"]), _f(row["oracle_err"], ".0e"),
              _f(row["spread"] and 100 * row["spread"], ".0f")]
    return cells


def _header(decode: bool) -> list[str]:
    rate = ["K/V GB/s", "% bw"] if decode else ["GFLOP/s", "% roof"]
    return ["shape", "contender", "time ms"] + rate + ["x torch", "peak MiB", "model MiB",
                                                       "err", "spread %"]


def _sections(rows: list[dict]):
    """Rows grouped by case group (in first-seen order), each with its own header."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["case"]["group"], []).append(row)
    for group, grows in groups.items():
        c = grows[0]["case"]
        same_heads = all(r["case"]["Hq"] == c["Hq"] and r["case"]["Hkv"] == c["Hkv"]
                         and r["case"]["B"] == c["B"] for r in grows)
        heads = (f"H={c['Hq']}" if c["Hq"] == c["Hkv"] else f"Hq={c['Hq']} Hkv={c['Hkv']}")
        title = group + (f" (B={c['B']}, {heads})" if same_heads else "")
        decode = all(r["case"]["Lq"] == 1 for r in grows)
        yield title, decode, grows


def _notes(rows: list[dict]) -> list[str]:
    notes = []
    for row in rows:
        if row["status"] != "ok" and row["reason"]:
            reason = row["reason"]
            if not reason.startswith(row["status"]):
                reason = f"{row['status']} -- {reason}"
            notes.append(f"{row['case']['label']}, {row['label']}: {reason}")
    return notes


def _roof_note(grows: list[dict], decode: bool) -> str | None:
    """The roof each case of a section was compared with (timed in its own rounds)."""
    key, unit, what = (("bandwidth_gbps", "GB/s", "read bandwidth") if decode else
                       ("roof_gflops", "GFLOP/s", "GEMM roof"))
    seen = {}
    for r in grows:
        if r[key] and r["status"] == "ok":
            seen.setdefault(_size(r["case"]), r[key])
    if not seen:
        return None
    return (f"{what} timed in the same rounds: "
            + ", ".join(f"{size}: {x:.1f}" for size, x in seen.items()) + f" {unit}")


def format_text(rows: list[dict]) -> str:
    """Fixed-width tables, one per case group, and a note per non-timed result."""
    out = []
    for title, decode, grows in _sections(rows):
        table = [_header(decode)] + [[_size(r["case"]), r["label"]] + _row_cells(r, decode)
                                     for r in grows]
        widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
        out.append(f"\n{title}")
        for n, line in enumerate(table):
            out.append("  ".join(cell.ljust(w) if i < 2 else cell.rjust(w)
                                 for i, (cell, w) in enumerate(zip(line, widths, strict=False))))
            if n == 0:
                out.append("  ".join("-" * w for w in widths))
        note = _roof_note(grows, decode)
        if note:
            out.append(note)
    notes = _notes(rows)
    if notes:
        out.append("\nNot timed:")
        out += [f"  {n}" for n in notes]
    return "\n".join(out)


def format_markdown(machine: dict, roof: dict | None, bandwidth: dict | None,
                    cold_start: dict | None, rows: list[dict], sweeps: list[Sweep],
                    command: str) -> str:
    """The tables as BENCHMARKS.md shows them: machine, command, roofs, one table per group,
    notes, and the block sweeps."""
    out = ["## Machine", ""] + [f"- {line}" for line in describe_machine(machine)]
    out += ["", "## Command", "", "```", command, "```", "", "## Roofs (same run)", ""]
    out += roof_lines(roof, bandwidth, cold_start, bullet="- ")
    if rows:
        out += ["", COLUMNS]
    for title, decode, grows in _sections(rows):
        out += ["", f"### {title}", ""]
        header = _header(decode)
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "|".join(["---", "---"] + ["---:"] * (len(header) - 2)) + "|")
        for r in grows:
            out.append("| " + " | ".join([_size(r["case"]), r["label"]] + _row_cells(r, decode))
                       + " |")
        note = _roof_note(grows, decode)
        if note:
            out += ["", note[0].upper() + note[1:] + "."]
    notes = _notes(rows)
    if notes:
        out += ["", "Not timed:", ""] + [f"- {n}" for n in notes]
    for s in sweeps:
        out += ["", *format_sweep(s, markdown=True)]
    return "\n".join(out) + "\n"


def roof_lines(roof: dict | None, bandwidth: dict | None, cold_start: dict | None,
               bullet: str = "") -> list[str]:
    lines = []
    if roof:
        spread = ", ".join(f"{x:.1f}" for x in roof.get("runs_gflops", []))
        lines.append(f"{bullet}GEMM roof (numpy float32 {roof['n']}^3 matmul, best of "
                     f"{len(roof['samples_s'])}): {roof['gflops']:.1f} GFLOP/s"
                     + (f" (runs at start/end: {spread})" if spread else ""))
    if bandwidth:
        lines.append(f"{bullet}Read bandwidth ({bandwidth.get('reader', 'np.max')} over "
                     f"{bandwidth['bytes'] / 2**30:.2f} GiB "
                     f"float32, {bandwidth['threads']} threads, best of "
                     f"{len(bandwidth['samples_s'])}): {bandwidth['gbps']:.1f} GB/s")
    if cold_start:
        runs = cold_start.get("runs_in_process_s") or [cold_start["in_process_s"]]
        lines.append(f"{bullet}First result in a new process (warm Numba cache), median of "
                     f"{len(runs)}: {cold_start['in_process_s']:.2f} s from `import kernels` "
                     f"(runs {', '.join(f'{x:.2f}' for x in runs)}), "
                     f"{cold_start['wall_s']:.2f} s wall with interpreter start")
    return lines


def format_sweep(s: Sweep, markdown: bool = False) -> list[str]:
    """The (Br, Bc) grid in ms, with the best and the current default."""
    c = s.case
    title = f"Block sweep: streaming, {c.label} (ms per call; rows Br, columns Bc)"
    header = ["Br \\ Bc"] + [str(b) for b in s.kv_blocks]
    best, dflt = s.best, s.default

    def cell(Br, Bc, x):
        text = _f(None if math.isnan(x) else x, ".2f", "X")
        return f"**{text}**" if markdown and (Br, Bc) == best else text

    body = [[str(Br)] + [cell(Br, Bc, x) for Bc, x in zip(s.kv_blocks, row, strict=False)]
            for Br, row in zip(s.q_blocks, s.ms, strict=False)]
    flops = attention_flops(c)
    tail = [f"best {best}: {s.ms_at(*best):.2f} ms, {flops / s.ms_at(*best) / 1e6:.1f} GFLOP/s"
            if best else "no block size passed the gate",
            f"default {dflt}: " + (f"{s.ms_at(*dflt):.2f} ms" if s.ms_at(*dflt) else
                                   "not in the grid")]
    if markdown:
        lines = [f"### {title}", "", "| " + " | ".join(header) + " |",
                 "|" + "|".join(["---:"] * len(header)) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return lines + ["", "; ".join(tail)]
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
    lines = [title, "  ".join(h.rjust(w) for h, w in zip(header, widths, strict=False))]
    lines += ["  ".join(x.rjust(w) for x, w in zip(row, widths, strict=False)) for row in body]
    return lines + ["; ".join(tail)]
