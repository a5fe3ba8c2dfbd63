"""Turning rows into the screen table, a JSON file and a CSV file."""
from __future__ import annotations

import csv
import json
import math
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from .case import Row

# Row-level extra columns, in display order, with their headers.
_ROW_EXTRAS = {"us_per_step": "µs/step"}

LEGEND = (
    "median: per call, after warm-up (IQR: spread of the middle half of the runs).  "
    "{rate}: useful FLOPs / median.\n"
    "speedup: this path's time / fused time (>1: fused is faster); on the fused row, "
    "over the fastest PyTorch path (named in the note).\n"
    "max abs / rel err: vs float64 reference on the same inputs (rel = ‖Δ‖₂/‖ref‖₂); "
    "fwd+bwd rows: worst over all input and weight gradients."
)


# ------------------------------------------------------------- formatting --
def fmt_time(seconds: Optional[float]) -> str:
    if seconds is None or math.isnan(seconds):
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def fmt_rate(flop_rate: Optional[float], unit: float) -> str:
    if flop_rate is None:
        return "-"
    v = flop_rate / unit
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"  # tiny shapes still show a digit


def fmt_err(x: Optional[float]) -> str:
    if x is None:
        return "-"
    return "nan" if math.isnan(x) else f"{x:.1e}"


def fmt_speedup(x: Optional[float]) -> str:
    return "" if x is None else f"{x:.2f}x"


def rate_unit(device: str) -> tuple[str, float]:
    """GFLOP/s on the CPU, TFLOP/s on a GPU."""
    return ("TFLOP/s", 1e12) if device.startswith("cuda") else ("GFLOP/s", 1e9)


def _note(row: Row) -> str:
    if row.status != "ok":
        return f"{row.status}: {row.note}"
    parts = [row.note] if row.note else []
    if row.fused and row.vs:
        parts.append(f"vs {row.vs}")
    if "ref" in row.extra:
        parts.append(row.extra["ref"])
    return "; ".join(parts)


def _case_extra_keys(rows: Sequence[Row]) -> list[str]:
    keys: "OrderedDict[str, None]" = OrderedDict()
    for r in rows:
        for k in r.extra:
            if k not in _ROW_EXTRAS and k != "ref":
                keys[k] = None
    return list(keys)


def format_table(rows: Sequence[Row]) -> str:
    """One aligned table for rows of one op on one device; the case columns
    are printed on the first row of each case × dtype × mode group only."""
    if not rows:
        return ""
    rate_name, unit = rate_unit(rows[0].device)
    case_extras = _case_extra_keys(rows)
    row_extras = [k for k in _ROW_EXTRAS if any(k in r.extra for r in rows)]
    header = (["case", "dtype", "mode", *case_extras, "impl", "median", "IQR", rate_name, "speedup",
               "max abs err", "rel err"] + [_ROW_EXTRAS[k] for k in row_extras] + ["note"])
    right = {"median", "IQR", rate_name, "speedup", "max abs err", "rel err",
             *(_ROW_EXTRAS[k] for k in row_extras)}
    table, last_group = [], None
    for r in rows:
        group = (r.case, r.dtype, r.mode)
        lead = [r.case, r.dtype, r.mode, *(str(r.extra.get(k, "")) for k in case_extras)]
        if group == last_group:
            lead = [""] * len(lead)
        last_group = group
        t = r.timing
        cells = lead + [
            r.impl,
            fmt_time(t.median_s if t else None),
            fmt_time(t.iqr_s if t else None),
            fmt_rate(r.flop_rate, unit),
            fmt_speedup(r.speedup),
            fmt_err(r.error.max_abs if r.error else None),
            fmt_err(r.error.rel if r.error else None),
            *(f"{r.extra[k]:.2f}" if k in r.extra else "-" for k in row_extras),
            _note(r),
        ]
        table.append(cells)
    widths = [max(len(h), *(len(c[i]) for c in table)) for i, h in enumerate(header)]

    def line(cells):
        out = [c.rjust(w) if h in right else c.ljust(w) for c, w, h in zip(cells, widths, header)]
        return "  ".join(out).rstrip()

    sep = "  ".join("-" * w for w in widths)
    body, last_group = [], None
    for r, cells in zip(rows, table):
        group = (r.case, r.dtype, r.mode)
        if last_group is not None and group[:2] != last_group[:2]:
            body.append("")  # blank line between cases
        last_group = group
        body.append(line(cells))
    return "\n".join([line(header), sep, *body])


def format_summary(rows: Sequence[Row], primary: dict[str, str]) -> str:
    """One line per case and mode: the fused time, its speed-up over the op's
    main PyTorch path (``primary[op]``) and over the fastest one. The short
    view of a long sweep."""
    lines = [["op", "device", "case", "dtype", "mode", "fused", "vs main", "vs fastest", "fastest PyTorch path"]]
    for r in rows:
        if not r.fused:
            continue
        main = next((o for o in rows if not o.fused and o.impl == primary.get(r.op) and o.op == r.op
                     and o.device == r.device and o.case == r.case and o.dtype == r.dtype
                     and o.mode == r.mode), None)
        fused_time = fmt_time(r.timing.median_s) if r.timing else f"{r.status}"
        lines.append([r.op, r.device, r.case, r.dtype, r.mode, fused_time,
                      f"{fmt_speedup(main.speedup) or '-'} {main.impl}" if main else "-",
                      fmt_speedup(r.speedup) or "-", r.vs or "-"])
    if len(lines) == 1:
        return ""
    widths = [max(len(l[i]) for l in lines) for i in range(len(lines[0]))]
    out = ["  ".join(c.ljust(w) for c, w in zip(l, widths)).rstrip() for l in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def group_rows(rows: Iterable[Row]) -> "OrderedDict[tuple[str, str], list[Row]]":
    """Rows by (op, device), in first-seen order."""
    groups: "OrderedDict[tuple[str, str], list[Row]]" = OrderedDict()
    for r in rows:
        groups.setdefault((r.op, r.device), []).append(r)
    return groups


def table_title(rows: Sequence[Row], device_names: dict[str, str]) -> str:
    op, device = rows[0].op, rows[0].device
    return f"== {op} on {device} ({device_names.get(device, device)}) =="


def legend(rows: Sequence[Row]) -> str:
    """What the columns mean (printed once under the tables)."""
    devices = {r.device.split(":")[0] for r in rows}
    rate = "GFLOP/s (CPU) / TFLOP/s (GPU)" if len(devices) > 1 else rate_unit(rows[0].device)[0]
    return LEGEND.format(rate=rate)


def format_report(rows: Sequence[Row], device_names: dict[str, str]) -> str:
    """Every (op, device) table, then the legend."""
    if not rows:
        return ""
    parts = [f"{table_title(g, device_names)}\n{format_table(g)}" for g in group_rows(rows).values()]
    return "\n\n".join([*parts, legend(rows)])


# ----------------------------------------------------------------- files --
def write_json(path: str | Path, metadata: dict[str, Any], rows: Sequence[Row], notes: Sequence[str],
               extra: Optional[dict[str, Any]] = None) -> None:
    """``extra``: further top-level sections (e.g. the whole-model benchmarks)."""
    doc = {"metadata": metadata, "notes": list(notes), "results": [r.to_dict() for r in rows], **(extra or {})}
    Path(path).write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")


def _flat(row: Row, param_keys: Sequence[str], extra_keys: Sequence[str]) -> dict[str, Any]:
    t = row.timing
    flat = {"op": row.op, "device": row.device, "dtype": row.dtype, "mode": row.mode, "case": row.case}
    flat.update({k: row.params.get(k, "") for k in param_keys})
    flat.update({
        "impl": row.impl, "fused": row.fused, "status": row.status, "note": row.note,
        "median_s": t.median_s if t else "", "q1_s": t.q1_s if t else "", "q3_s": t.q3_s if t else "",
        "iqr_s": t.iqr_s if t else "", "runs": t.runs if t else "",
        "flops": row.flops, "flop_rate": row.flop_rate if row.flop_rate is not None else "",
        "speedup": row.speedup if row.speedup is not None else "", "vs": row.vs or "",
        "max_abs_err": row.error.max_abs if row.error else "",
        "rel_err": row.error.rel if row.error else "",
    })
    flat.update({k: row.extra.get(k, "") for k in extra_keys})
    return flat


def write_csv(path: str | Path, rows: Sequence[Row]) -> None:
    """One line per row; shape parameters and extras become their own columns."""
    param_keys = list(OrderedDict.fromkeys(k for r in rows for k in r.params))
    extra_keys = list(OrderedDict.fromkeys(k for r in rows for k in r.extra))
    flat = [_flat(r, param_keys, extra_keys) for r in rows]
    fields = list(flat[0]) if flat else ["op"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(flat)
