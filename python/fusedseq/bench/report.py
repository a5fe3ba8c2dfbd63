"""Rows on screen (a table per op and device, then a summary), in a JSON
file and in a speed-up chart. A ratio whose timings were unstable is never
shown plain: the table prints it as ``(0.02x)?`` with the reason, the
summary says "unstable", the chart leaves it out."""
from __future__ import annotations

import json
import math
from dataclasses import asdict
from typing import Any, Optional, Sequence

from .harness import REGISTRY, Row

LEGEND = ("median: per call after warm-up, IQR: spread of the middle half of the runs; rate: useful work / median.\n"
          "speedup: this path's time / fused time (>1: fused is faster); on the fused row, over the fastest "
          "PyTorch path.\n(1.23x)?: a ratio from an unstable timing (see its note), not a result.\n"
          "max abs / rel err: vs a float64 reference on the same inputs (rel = ‖Δ‖₂/‖ref‖₂); fwd+bwd: worst "
          "over all gradients.\nfaults/call (CPU): minor page faults per call, the first touches of memory the "
          "allocator mapped afresh; time a different allocator can take away.")


def fmt_time(s: Optional[float]) -> str:
    if s is None or math.isnan(s):
        return "-"
    return f"{s * 1e6:.1f} µs" if s < 1e-3 else f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def fmt_ratio(r: Row) -> str:
    if r.speedup is None:
        return "-"
    return f"{r.speedup:.2f}x" if r.trusted else f"({r.speedup:.2f}x)?"


def fmt_rate(r: Row) -> str:
    if r.timing is None or not r.work:
        return "-"
    v = r.work / r.timing.median / rate_unit(r)[1]
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def rate_unit(r: Row) -> tuple[str, float]:
    if r.unit == "tok":
        return "tok/s", 1.0
    return ("TFLOP/s", 1e12) if r.device.startswith("cuda") else ("GFLOP/s", 1e9)


def _err(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.1e}"


def fmt_faults(r: Row) -> str:
    f = r.timing.faults_per_call if r.timing else None
    return "-" if f is None else f"{f:.0f}" if f >= 10 else f"{f:.1f}"


def _note(r: Row) -> str:
    if r.status != "ok":
        return f"{r.status}: {r.note}"
    parts = [r.note] if r.note else []
    if r.fused and r.vs:
        parts.append(f"vs {r.vs}")
    if r.unstable:
        parts.append(f"UNSTABLE: {r.unstable}" + (f" (measured {r.remeasured + 1}x)" if r.remeasured else ""))
    elif r.remeasured:
        parts.append(f"stable on try {r.remeasured + 1}")
    return "; ".join(parts)


def _align(lines: list[list[str]], right: set[int]) -> str:
    widths = [max(len(l[i]) for l in lines if len(l) > 1) for i in range(len(lines[0]))]
    out = []
    for l in lines:
        out.append("" if len(l) == 1 else "  ".join(c.rjust(w) if i in right else c.ljust(w)
                                                     for i, (c, w) in enumerate(zip(l, widths))).rstrip())
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def format_table(rows: Sequence[Row]) -> str:
    """One op on one device; the case columns only on the first row of each case × mode."""
    extra = list(dict.fromkeys(k for r in rows for k in r.columns))
    faults = any(r.timing is not None and r.timing.faults_per_call is not None for r in rows)
    head = ["case", "dtype", "mode", *extra, "impl", "median", "IQR", rate_unit(rows[0])[0], "speedup",
            *(["faults/call"] if faults else []), "max abs err", "rel err", "note"]
    lines, last = [head], None
    for r in rows:
        key = (r.case, r.dtype, r.mode)
        if last is not None and key[:2] != last[:2]:
            lines.append([""])  # a blank line between cases
        lead = ["", "", "", *[""] * len(extra)] if key == last else \
            [r.case, r.dtype, r.mode, *(r.columns.get(k, "") for k in extra)]
        last = key
        t = r.timing
        lines.append(lead + [r.impl, fmt_time(t and t.median), fmt_time(t and t.q3 - t.q1), fmt_rate(r),
                             fmt_ratio(r), *([fmt_faults(r)] if faults else []), _err(r.max_abs), _err(r.rel),
                             _note(r)])
    return _align(lines, right=set(range(len(extra) + 4, len(head) - 1)))


def format_summary(rows: Sequence[Row]) -> str:
    """One line per case × mode: fused time, speed-up over the op's main
    PyTorch path and over the fastest one ("unstable" where not to be trusted)."""
    lines = [["op", "device", "case", "dtype", "mode", "fused", "vs main", "vs fastest"]]
    for f in (r for r in rows if r.fused):
        primary = REGISTRY[f.op].primary
        primary = primary if isinstance(primary, tuple) else (primary,)
        main = next((o for o in rows if o.impl in primary and (o.op, o.device, o.case, o.dtype, o.mode)
                     == (f.op, f.device, f.case, f.dtype, f.mode)), None)
        vs_main = "-" if main is None or main.speedup is None else \
            f"{main.speedup:.2f}x {main.impl}" if main.trusted else f"unstable ({main.impl})"
        vs_fast = "-" if f.speedup is None else f"{f.speedup:.2f}x {f.vs}" if f.trusted else "unstable"
        lines.append([f.op, f.device, f.case, f.dtype, f.mode,
                      fmt_time(f.timing.median) if f.timing else f.status, vs_main, vs_fast])
    return _align(lines, right=set()) if len(lines) > 1 else ""


def write_json(path: str, metadata: dict[str, Any], rows: Sequence[Row]) -> None:
    doc = {"metadata": metadata, "results": [dict(asdict(r), fused=r.fused, unstable=r.unstable) for r in rows]}
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(doc, indent=2, default=str) + "\n")


def plot(rows: Sequence[Row], path: str, title: str = "") -> bool:
    """The fused speed-up over each PyTorch path (log scale, 1x = parity), a panel
    per op and device; untrusted ratios are left out and counted. False if empty."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    panels: dict = {}
    for r in rows:
        if r.speedup is not None and not r.fused:
            panels.setdefault((r.op, r.device), []).append(r)
    if not panels:
        return False
    fig = Figure(figsize=(max(8.0, 1.2 * max(map(len, panels.values()))), 4.2 * len(panels)))
    for i, ((op, device), group) in enumerate(panels.items()):
        ax = fig.add_subplot(len(panels), 1, i + 1)
        cases = list(dict.fromkeys(f"{r.case}\n{r.dtype} {r.mode}" for r in group))
        impls = list(dict.fromkeys(r.impl for r in group))
        for j, impl in enumerate(impls):
            shown = [r for r in group if r.impl == impl and r.trusted]
            if shown:
                x = [cases.index(f"{r.case}\n{r.dtype} {r.mode}") + (j - (len(impls) - 1) / 2) * 0.8 / len(impls)
                     for r in shown]
                bars = ax.bar(x, [r.speedup for r in shown], width=0.8 / len(impls), label=f"vs {impl}")
                ax.bar_label(bars, fmt="%.2f", fontsize=6, padding=1) if len(cases) * len(impls) <= 40 else None
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        for axis in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
            axis(FuncFormatter(lambda y, _: f"{y:.3g}×"))
        rotate = len(cases) > 3
        ax.set_xticks(range(len(cases)), cases, fontsize=7, rotation=30 if rotate else 0, ha="right" if rotate else "center")
        ax.set_xlim(-0.6, len(cases) - 0.4)
        ax.tick_params(axis="y", which="minor", labelsize=6)
        ax.set_ylabel("fused speed-up (×)")
        left_out = sum(not r.trusted for r in group)
        ax.set_title(f"{op} on {device}" + (f" ({left_out} unstable ratios left out)" if left_out else ""), fontsize=10)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.005, 1.0))
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight")  # tight: rotated case labels and the legend stay in
    return True
