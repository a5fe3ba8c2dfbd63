"""fusedseq.training: a training loop that loses nothing.

    save_checkpoint / load_checkpoint / latest_checkpoint   atomic checkpoints
    Trainer(model, optimizer, sample_batch, steps=..., generator=...)
        .fit(resume=False) -> TrainResult                  exact resume, DDP-ready
    sample_windows(inputs, targets, batch_size)            a resumable batch source

``python -m fusedseq train`` (``cli.py``) trains the transformer LM or the
next-word embedding model with them.

The names are loaded on first use, so that the command-line parser, which
imports ``fusedseq.training.cli``, does not pay for torch here.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "save_checkpoint": "checkpoint", "load_checkpoint": "checkpoint", "latest_checkpoint": "checkpoint",
    "list_checkpoints": "checkpoint", "checkpoint_name": "checkpoint", "load_newest_intact": "checkpoint",
    "verify_checkpoint": "checkpoint", "CorruptCheckpointError": "checkpoint",
    "DamagedCheckpointWarning": "checkpoint",
    "Trainer": "trainer", "TrainResult": "trainer", "ConfigMismatchError": "trainer",
    "sample_windows": "trainer", "check_config": "trainer", "read_loss_log": "trainer",
    "dist_info": "trainer", "unwrap": "trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
