"""Checkpoints that a kill at any moment cannot tear.

A checkpoint is written to a temporary file in the same directory, flushed
and fsync'ed, then renamed onto its final name with ``os.replace``. A rename
within one filesystem is atomic, so whoever looks at the final name sees
either the previous file or the complete new one, never half of one; the
directory is fsync'ed afterwards so the rename itself survives a crash.

Checkpoints of one run live in one directory, one file per step
(``step_00000040.pt``); :func:`latest_checkpoint` finds the newest.

A file is a header line, the SHA-256 of the payload and the payload (what
``torch.save`` writes). :func:`load_checkpoint` verifies the checksum before
unpickling anything, so a truncated, zeroed or bit-flipped file raises
:class:`CorruptCheckpointError` naming it instead of loading wrong numbers;
:func:`load_newest_intact` then falls back to the newest file that verifies,
and :func:`prune_checkpoints` never deletes that one.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
import warnings
from typing import Any, Optional

CHECKPOINT_PATTERN = re.compile(r"^step_(\d+)\.pt$")
_TMP_PREFIX = ".tmp-"
MAGIC = b"fusedseq-checkpoint v1 sha256 "   # + 64 hex digits + newline, then the payload
_HEADER = len(MAGIC) + 65


class CorruptCheckpointError(ValueError):
    """A checkpoint file that is damaged: it fails its checksum or cannot be read."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"checkpoint {path!r} is damaged: {reason}")
        self.path, self.reason = path, reason


class DamagedCheckpointWarning(UserWarning):
    """A damaged checkpoint was skipped in favour of an older, intact one."""


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
    payload = io.BytesIO()
    torch.save(state, payload)
    payload = payload.getvalue()
    fd, tmp_path = tempfile.mkstemp(prefix=_TMP_PREFIX + os.path.basename(path) + ".", dir=directory)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a checkpoint is an ordinary file
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC + hashlib.sha256(payload).hexdigest().encode("ascii") + b"\n")
            f.write(payload)
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _verified_payload(path: str) -> bytes:
    """The payload of the checkpoint at ``path``, once its checksum matches."""
    with open(path, "rb") as f:
        data = f.read()
    header, payload = data[:_HEADER], data[_HEADER:]
    if not header.startswith(MAGIC) or not header.endswith(b"\n"):
        raise CorruptCheckpointError(path, "no fusedseq checkpoint header (truncated, overwritten or not a "
                                           "checkpoint)")
    if hashlib.sha256(payload).hexdigest().encode("ascii") != header[len(MAGIC):-1]:
        raise CorruptCheckpointError(path, f"its content does not match its SHA-256 ({len(payload)} bytes "
                                           f"after the header: truncated or changed after it was written)")
    return payload


def verify_checkpoint(path: str | os.PathLike) -> Optional[str]:
    """None if the checkpoint at ``path`` matches its checksum, else why not."""
    try:
        _verified_payload(os.fspath(path))
    except (CorruptCheckpointError, OSError) as e:
        return getattr(e, "reason", str(e))
    return None


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`, after verifying
    its checksum (:class:`CorruptCheckpointError` if it does not match).

    Loaded with ``weights_only=True``: a checkpoint holds only tensors and
    plain Python containers and numbers, so no code runs on loading."""
    import torch

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load_checkpoint: no checkpoint file at {path!r}")
    payload = _verified_payload(path)
    try:
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001  the checksum matched, yet torch cannot read it
        raise CorruptCheckpointError(path, f"torch.load failed: {type(e).__name__}: {e}") from None
    if not isinstance(state, dict):
        raise CorruptCheckpointError(path, "it does not hold a checkpoint dict")
    return state


def load_newest_intact(directory: str | os.PathLike, map_location: Any = "cpu") -> tuple[str, dict]:
    """``(path, state)`` of the newest checkpoint in ``directory`` that
    verifies and loads; each damaged newer one is skipped with a
    :class:`DamagedCheckpointWarning` naming it. FileNotFoundError if there
    is no checkpoint, CorruptCheckpointError if every one is damaged."""
    found = list_checkpoints(directory)
    if not found:
        raise FileNotFoundError(f"no checkpoint (step_*.pt) in {os.fspath(directory)!r}")
    damaged = []
    for _, path in reversed(found):
        try:
            state = load_checkpoint(path, map_location)
        except CorruptCheckpointError as e:
            damaged.append(e)
            continue
        for e in damaged:
            warnings.warn(f"{e}; resuming from the older {os.path.basename(path)} instead",
                          DamagedCheckpointWarning, stacklevel=2)
        return path, state
    raise CorruptCheckpointError(os.fspath(directory), "every checkpoint in it is damaged:\n  "
                                 + "\n  ".join(str(e) for e in damaged))


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
    """Delete all but the ``keep_last`` newest checkpoints, except that the
    newest one that verifies is always kept; returns the deleted paths."""
    if not isinstance(keep_last, int) or keep_last < 1:
        raise ValueError(f"prune_checkpoints: keep_last must be an int >= 1, got {keep_last!r}")
    found = [path for _, path in list_checkpoints(directory)]
    newest_intact = next((p for p in reversed(found) if verify_checkpoint(p) is None), None)
    old = [path for path in found[:-keep_last] if path != newest_intact]
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
