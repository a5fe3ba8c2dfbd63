"""Checkpoints that a kill at any moment cannot tear.

A checkpoint is written to a temporary file in the same directory, flushed
and fsync'ed, then renamed onto its final name with ``os.replace``. A rename
within one filesystem is atomic, so whoever looks at the final name sees
either the previous file or the complete new one, never half of one; the
directory is fsync'ed afterwards so the rename itself survives a crash.

Checkpoints of one run live in one directory, one file per step
(``step_00000040.pt``); :func:`latest_checkpoint` finds the newest.
"""
from __future__ import annotations

import os
import re
import tempfile
from typing import Any, Optional

CHECKPOINT_PATTERN = re.compile(r"^step_(\d+)\.pt$")
_TMP_PREFIX = ".tmp-"


def checkpoint_name(step: int) -> str:
    """The file name of the checkpoint taken after ``step`` optimizer steps."""
    if not isinstance(step, int) or step < 0:
        raise ValueError(f"checkpoint_name: step must be an int >= 0, got {step!r}")
    return f"step_{step:08d}.pt"


def _fsync_directory(directory: str) -> None:
    """Make a rename inside ``directory`` durable (a no-op where directories
    cannot be opened, e.g. on Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: str | os.PathLike, state: dict) -> str:
    """Write ``state`` (anything ``torch.save`` takes) to ``path`` atomically.

    Either the old file at ``path`` (if any) or the complete new one is there
    at every moment; on an error the temporary file is removed and the error
    re-raised. Returns the path written."""
    import torch

    if not isinstance(state, dict):
        raise TypeError(f"save_checkpoint: state must be a dict, got {type(state).__name__}")
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # Same directory as the target: os.replace is only atomic within one filesystem.
    fd, tmp_path = tempfile.mkstemp(prefix=_TMP_PREFIX + os.path.basename(path) + ".", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp_path, path)
    except BaseException:  # KeyboardInterrupt too: never leave a temp file behind
        try:
            os.unlink(tmp_path)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(directory)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Loaded with ``weights_only=True``: a checkpoint holds only tensors and
    plain Python containers and numbers, so no code runs on loading."""
    import torch

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load_checkpoint: no checkpoint file at {path!r}")
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"load_checkpoint: {path!r} does not hold a checkpoint dict")
    return state


def list_checkpoints(directory: str | os.PathLike) -> list[tuple[int, str]]:
    """``(step, path)`` of every checkpoint in ``directory``, oldest first
    (temporary files of interrupted writes are not checkpoints)."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        return []
    found = []
    for name in os.listdir(directory):
        m = CHECKPOINT_PATTERN.match(name)
        if m:
            found.append((int(m.group(1)), os.path.join(directory, name)))
    return sorted(found)


def latest_checkpoint(directory: str | os.PathLike) -> Optional[str]:
    """The path of the newest checkpoint in ``directory``, or None if it has none."""
    found = list_checkpoints(directory)
    return found[-1][1] if found else None


def prune_checkpoints(directory: str | os.PathLike, keep_last: int) -> list[str]:
    """Delete all but the ``keep_last`` newest checkpoints; returns the deleted paths.
    Called only after a newer checkpoint is safely on disk."""
    if not isinstance(keep_last, int) or keep_last < 1:
        raise ValueError(f"prune_checkpoints: keep_last must be an int >= 1, got {keep_last!r}")
    old = [path for _, path in list_checkpoints(directory)[:-keep_last]]
    for path in old:
        os.unlink(path)
    return old


def remove_stale_temporaries(directory: str | os.PathLike) -> list[str]:
    """Delete temporary files left by writes that a kill interrupted (they
    were never renamed, so they hold nothing anyone needs)."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        return []
    stale = [os.path.join(directory, n) for n in os.listdir(directory) if n.startswith(_TMP_PREFIX)]
    for path in stale:
        os.unlink(path)
    return stale
