"""Speed-up bar chart: for every case, one bar per PyTorch path showing how
many times faster the fused path is (log scale; the line at 1× is parity).
One panel per op and device.

A big sweep (the CUDA defaults: dozens of shapes × several paths) would make
thousands of unreadable bars, so a panel with more than ``MAX_BARS`` bars
shows one bar per case instead: the speed-up over the fastest PyTorch path.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Sequence

from .case import Row

MAX_BARS = 160


def _case_key(r: Row) -> str:
    return f"{r.case}\n{r.dtype} {r.mode}"


def _panels(rows: Sequence[Row]) -> "OrderedDict[tuple[str, str], list[Row]]":
    panels: "OrderedDict[tuple[str, str], list[Row]]" = OrderedDict()
    for r in rows:
        if r.speedup is not None:
            panels.setdefault((r.op, r.device), []).append(r)
    return panels


def _series(group: list[Row]) -> tuple[list[str], "OrderedDict[str, dict[str, float]]", bool]:
    """(cases, {series label: {case: speed-up}}, whether reduced to vs-fastest)."""
    cases = list(OrderedDict.fromkeys(_case_key(r) for r in group))
    baselines = [r for r in group if not r.fused]
    impls = list(OrderedDict.fromkeys(r.impl for r in baselines))
    series: "OrderedDict[str, dict[str, float]]" = OrderedDict()
    if len(cases) * max(1, len(impls)) <= MAX_BARS:
        for impl in impls:
            series[f"vs {impl}"] = {_case_key(r): r.speedup for r in baselines if r.impl == impl}
        return cases, series, False
    series["vs fastest PyTorch path"] = {_case_key(r): r.speedup for r in group if r.fused}
    return cases, series, True


def plot_speedups(rows: Sequence[Row], path: str | Path, title: str = "") -> bool:
    """Writes the chart to ``path`` (PNG); returns False when no row has a
    speed-up to draw (e.g. every fused row was skipped)."""
    import matplotlib
    matplotlib.use("Agg")  # files only: no display needed (CI, ssh)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    panels = [(key, *_series(group)) for key, group in _panels(rows).items()]
    panels = [p for p in panels if any(p[2].values())]
    if not panels:
        return False

    times = FuncFormatter(lambda y, _: f"{y:g}×")
    bars_wide = max(len(cases) * len(series) for _, cases, series, _ in panels)
    fig_w = min(40.0, max(8.0, 0.22 * bars_wide + 0.4 * max(len(c) for _, c, _, _ in panels) + 3))
    fig, axes = plt.subplots(len(panels), 1, squeeze=False, figsize=(fig_w, 4.4 * len(panels)))
    for ax, ((op, device), cases, series, reduced) in zip(axes[:, 0], panels):
        width = 0.8 / len(series)
        for j, (label, by_case) in enumerate(series.items()):
            offset = (j - (len(series) - 1) / 2) * width
            xs = [i + offset for i, c in enumerate(cases) if c in by_case]
            ys = [by_case[c] for c in cases if c in by_case]
            bars = ax.bar(xs, ys, width=width, label=label)
            if len(cases) * len(series) <= 40:  # value labels stay readable only on small charts
                ax.bar_label(bars, fmt="%.2f", fontsize=6, padding=1)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(times)
        ax.yaxis.set_minor_formatter(times)
        ax.tick_params(axis="y", which="minor", labelsize=7)
        ax.set_xticks(range(len(cases)))
        rotate = len(cases) > 3
        ax.set_xticklabels(cases, fontsize=7, rotation=35 if rotate else 0, ha="right" if rotate else "center")
        ax.set_xlim(-0.6, len(cases) - 0.4)
        ax.set_ylabel("fused speed-up (×)")
        ax.set_title(f"{op} on {device}" + (" (vs the fastest path per case)" if reduced else ""),
                     fontsize=10)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.005, 1.0))  # outside: never over a bar
        ax.grid(axis="y", which="both", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
