"""What every demo shares: the common options, seeding, the progress bar,
figures saved atomically, and the metrics report.

The options (``add_common_arguments``):

    --out DIR                      where the PNGs and metrics.json go
                                   (default ./fusedseq-demo-out/<name>)
    --device cpu|cuda|cuda:N       default cpu
    --backend fused|reference      the backend of every fusedseq model (default fused)
    --seed N                       every random choice follows from it (default 0)
    --quick                        a few-second version, for the test suite
    --threads N                    torch intra-op threads while the demo runs (default 1;
                                   0 keeps torch's own choice)

Plots use matplotlib's object-oriented API on a bare ``Figure`` (rendered by
the Agg canvas), never pyplot, so no window opens and no global state changes.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
from typing import Any, Iterable, Mapping, Optional

from .. import _argtypes
from ..nn._backend import BACKENDS

OUT_ROOT = "fusedseq-demo-out"


# ------------------------------------------------------------------ options --
def default_out(name: str) -> str:
    """The default output folder of demo ``name``, under the working directory."""
    return os.path.join(".", OUT_ROOT, name)


# argparse types of the demos' options (see fusedseq/_argtypes.py).
parse_device = _argtypes.device
parse_seed = non_negative_int = _argtypes.int_at_least(0)
positive_int = _argtypes.int_at_least(1)       # counts: steps, epochs, days
positive_float = _argtypes.finite_float(0.0, inclusive=False)   # rates and scales


def add_common_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """The options every demo takes (see the module docstring)."""
    group = parser.add_argument_group("common demo options")
    group.add_argument("--out", default=default_out(name), metavar="DIR",
                       help="folder for the PNGs and metrics.json (default: %(default)s)")
    group.add_argument("--device", type=parse_device, default="cpu",
                       help="cpu, cuda or cuda:N (default: %(default)s)")
    group.add_argument("--backend", choices=BACKENDS, default="fused",
                       help="backend of every fusedseq model: the fused kernels or plain PyTorch "
                            "(default: %(default)s)")
    group.add_argument("--seed", type=parse_seed, default=0,
                       help="seed of every random choice; the same seed gives the same run "
                            "(default: %(default)s)")
    group.add_argument("--quick", action="store_true",
                       help="a few-second version (smaller data, fewer steps), for the test suite")
    group.add_argument("--threads", type=non_negative_int, default=1,
                       help="torch intra-op threads while the demo runs; 0 keeps torch's default "
                            "(default: %(default)s: the demos' models are small, so a thread pool costs more "
                            "than it gives, and on a busy machine far more)")


class DemoArgumentError(ValueError):
    """A bad combination of demo options found after parsing (the command exits
    with status 2, as for an argparse error)."""


def resolve_device(text: str):
    """The torch.device for --device; DemoArgumentError when CUDA is asked for but absent."""
    import torch

    device = torch.device(text)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DemoArgumentError(f"--device {text}: CUDA is not available here "
                             f"(torch {torch.__version__}, cuda build: {torch.version.cuda}); use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DemoArgumentError(f"--device {text}: only {count} CUDA device(s) present")
    return device


# ------------------------------------------------------------------ seeding --
def seed_everything(seed: int):
    """Seeds torch's global generator (module initialisation draws from it)
    and returns a fresh ``torch.Generator`` for the demo's own draws."""
    import torch

    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def numpy_rng(seed: int, stream: int = 0):
    """A numpy Generator for ``seed``; ``stream`` gives independent streams
    (e.g. the training record and the unseen test days)."""
    import numpy as np

    return np.random.default_rng([seed, stream])


@contextlib.contextmanager
def torch_threads(n: int):
    """Runs the block with ``n`` intra-op torch threads (0: leave the count
    alone), then restores the count.

    Why the demos default to one: their models are small, so each op is short
    and synchronising a thread pool per op (per time step, inside a
    recurrence) costs more than the parallel work saves. On a machine whose
    cores are busy with other work it is far worse: a thread that waits at a
    barrier for a descheduled partner stalls the whole step (measured: a
    training step of the dynamics demo's RNN took 5 ms with one thread and
    700 ms with two on a 2-core machine running other jobs)."""
    import torch

    if n == 0:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------- progress --
def progress(total: int, desc: str):
    """A tqdm bar over ``range(total)`` for a training loop. It is cleared when
    done (the metrics are what stays on screen); update its text with
    ``bar.set_postfix(loss=...)``."""
    from tqdm.auto import tqdm

    return tqdm(range(total), desc=desc, leave=False, dynamic_ncols=True, mininterval=0.2, unit="step")


# ------------------------------------------------------------------ figures --
def new_figure(width: float, height: float, **kwargs):
    """A matplotlib Figure not attached to pyplot (Agg rendering, no window)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), **kwargs)


def _atomic_write(path: str, write) -> str:
    """Calls ``write(file)`` on a temporary file in ``path``'s folder, then
    renames it onto ``path``: a reader never sees a half-written file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=folder)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; these are ordinary output files (0644)
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_figure(fig, out_dir: str, filename: str, dpi: int = 110) -> str:
    """Writes ``fig`` as ``out_dir/filename`` (a PNG) atomically; returns the path.

    The image is cropped to what was drawn (``bbox_inches="tight"``), so long,
    rotated tick labels, a suptitle or a legend outside the axes are never cut
    off, whatever the layout engine."""
    if not filename.endswith(".png"):
        raise ValueError(f"filename must end with .png, got {filename!r}")
    return _atomic_write(os.path.join(out_dir, filename),
                         lambda f: fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.1))


def declutter_labels(fig, texts, offsets=((3, 2), (3, -9), (-3, 2), (-3, -9))) -> int:
    """Keeps the text labels (annotations, ``xytext`` in points) from
    overlapping: each, in order, takes the first of ``offsets`` where it
    touches no label already placed, or is hidden. Returns how many show."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    placed = []
    for text in texts:
        for dx, dy in offsets:
            text.set_position((dx, dy))
            text.set_horizontalalignment("left" if dx > 0 else "right")
            box = text.get_window_extent(renderer).expanded(1.05, 1.1)
            if not any(box.overlaps(other) for other in placed):
                placed.append(box)
                break
        else:
            text.set_visible(False)
    return len(placed)


# ------------------------------------------------------------------ metrics --
def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_format_value(v) for v in value)
    return str(value)


def format_metrics(metrics: Mapping[str, Any]) -> str:
    """The metrics as aligned ``name: value`` lines."""
    width = max((len(k) for k in metrics), default=0)
    return "\n".join(f"{k + ':':<{width + 1}} {_format_value(v)}" for k, v in metrics.items())


def print_metrics(metrics: Mapping[str, Any], title: Optional[str] = None) -> dict:
    """Prints ``metrics`` (after ``title``) and returns them as a plain dict."""
    if title:
        print(title)
    print(format_metrics(metrics), flush=True)
    return dict(metrics)


def write_metrics_json(metrics: Mapping[str, Any], out_dir: str, filename: str = "metrics.json") -> str:
    """Writes ``metrics`` as JSON in ``out_dir`` atomically; returns the path."""
    text = json.dumps(dict(metrics), indent=2, sort_keys=False, default=str) + "\n"
    return _atomic_write(os.path.join(out_dir, filename), lambda f: f.write(text.encode("utf-8")))


def table(rows: Iterable[Iterable[Any]], header: Iterable[str]) -> str:
    """A plain-text table with columns padded to their widest cell."""
    rows = [[str(c) for c in r] for r in rows]
    header = [str(h) for h in header]
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    return "\n".join(lines)
