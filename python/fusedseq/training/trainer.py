"""A training loop that loses nothing: checkpoints, exact resume, DDP.

    trainer = Trainer(model, optimizer, sample_windows(inputs, targets, 32),
                      steps=1000, generator=torch.Generator().manual_seed(0),
                      checkpoint_dir="out", checkpoint_every=100, config={...})
    result = trainer.fit(resume=False)      # or resume=True after a kill

Exact resume. Everything random that a step uses is drawn from state that
goes into the checkpoint: the batch-sampling ``torch.Generator`` (each step's
batch is a function of its state alone, see :func:`sample_windows`), torch's
global CPU RNG (dropout), the CUDA RNG, Python's ``random``. With the model,
optimizer and scheduler states restored too, a resumed run computes the very
same floating-point operations as an uninterrupted one, so on the CPU its
losses are bitwise equal. (numpy's global RNG is not saved: nothing in the
training path draws from it.)

Distributed. If the model is wrapped in ``DistributedDataParallel``, every
rank samples the same *global* batch from the same generator state and keeps
its own contiguous slice of rows; DDP averages the gradients, so a step equals
a single-process step on the whole global batch up to the order of the
floating-point sums. The logged loss is the mean over ranks (= the loss of the
global batch). Only rank 0 writes checkpoints and the loss log and shows the
progress bar; every rank restores from the same checkpoint.

Nothing is lost. A damaged newest checkpoint (it fails its checksum) is
skipped with a warning naming it, in favour of the newest intact one.
Ctrl-C stops at the next step boundary and saves a checkpoint there
(``TrainResult.interrupted``; a second Ctrl-C stops at once). A loss that
is not finite raises before ``optimizer.step()``, so the weights and the
optimizer state stay those of the last good step.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

from .checkpoint import (checkpoint_name, list_checkpoints, load_newest_intact, prune_checkpoints,
                         remove_stale_temporaries, save_checkpoint)

CHECKPOINT_FORMAT = 1
LOSS_LOG = "losses.jsonl"

Batch = Sequence[torch.Tensor]


class ConfigMismatchError(ValueError):
    """A checkpoint was trained with a different configuration than the one
    asked to resume it."""


# ---------------------------------------------------------------- batches --
def sample_windows(inputs: torch.Tensor, targets: torch.Tensor, batch_size: int
                   ) -> Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]]:
    """A batch source: each call draws ``batch_size`` random rows (with
    replacement) of ``inputs`` / ``targets`` (num_windows, T).

    Stateless on purpose: a step's batch depends only on the generator's
    state, so saving that state is all a checkpoint needs to resume the
    batch sequence mid-epoch (an epoch iterator would hide its position)."""
    if not isinstance(inputs, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise TypeError("sample_windows: inputs and targets must be tensors")
    if inputs.shape != targets.shape or inputs.dim() < 1 or inputs.shape[0] == 0:
        raise ValueError(f"sample_windows: inputs and targets must have the same non-empty shape "
                         f"(num_windows, T), got {tuple(inputs.shape)} and {tuple(targets.shape)}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"sample_windows: batch_size must be an int >= 1, got {batch_size!r}")
    num_windows = inputs.shape[0]

    def sample(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.randint(num_windows, (batch_size,), generator=generator)  # (B,)
        return inputs[rows], targets[rows]                                   # (B, T) each

    return sample


# ------------------------------------------------------------ distributed --
def dist_info() -> tuple[int, int]:
    """(rank, world_size); (0, 1) outside torch.distributed."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel / DataParallel wrapper."""
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return model.module
    return model


def _rank_slice(t: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Rows ``[rank*b, (rank+1)*b)`` of a global batch of ``world*b`` rows."""
    if t.shape[0] % world:
        raise ValueError(f"Trainer: the global batch size ({t.shape[0]}) must be a multiple of the "
                         f"number of processes ({world}) so that every rank gets an equal slice")
    b = t.shape[0] // world
    return t[rank * b:(rank + 1) * b]


# -------------------------------------------------------------------- RNG --
def capture_rng_state(device: torch.device) -> dict:
    """The global random states a training step may draw from."""
    state = {"torch_cpu": torch.get_rng_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch_cpu"])
    random.setstate(_as_python_random_state(state["python"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def _as_python_random_state(s: Any) -> tuple:
    # random.setstate wants (version, tuple_of_ints, gauss_next) exactly.
    version, internal, gauss = s
    return (version, tuple(internal), gauss)


# ------------------------------------------------------------------ result --
@dataclass
class TrainResult:
    losses: list[float]          # one per step since step 0 (a resumed run's too)
    start_step: int              # the step this session started from
    steps: int                   # the step it ended at
    seconds: float               # time spent in training steps this session
    tokens: int                  # tokens (global) processed this session
    checkpoint: Optional[str] = None   # the last checkpoint written, if any
    interrupted: bool = False          # stopped early by Ctrl-C (SIGINT), after saving
    extra: dict = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")

    @property
    def final_loss(self) -> float:
        return self.losses[-1] if self.losses else float("nan")


# ----------------------------------------------------------------- trainer --
class Trainer:
    """Runs ``steps`` optimizer steps of ``model`` on batches from
    ``sample_batch(generator)``, checkpointing every ``checkpoint_every`` steps.

    ``model(*batch)`` must return ``(output, loss)`` (the fusedseq model
    contract ``forward(idx, targets) -> (logits, loss)``) or a scalar loss.
    ``sample_batch`` returns the *global* batch: a tuple of tensors with the
    batch dimension first, on any device (they are moved to ``device``).
    ``config`` is the training configuration a resume must match; ``extra_state``
    (e.g. the tokenizer's dict) is saved in every checkpoint as ``"extra"``.
    ``on_step(step, loss)`` is called after every step (outside the timing).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 sample_batch: Callable[[torch.Generator], Batch], *, steps: int,
                 generator: torch.Generator, scheduler: Optional[Any] = None,
                 grad_clip: Optional[float] = 1.0, checkpoint_dir: Optional[str] = None,
                 checkpoint_every: int = 0, keep_last: int = 2, config: Optional[dict] = None,
                 extra_state: Optional[dict] = None, device: Optional[torch.device | str] = None,
                 progress: bool = True, desc: str = "train",
                 on_step: Optional[Callable[[int, float], None]] = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"Trainer: model must be an nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"Trainer: optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if not callable(sample_batch):
            raise TypeError("Trainer: sample_batch must be callable: generator -> batch")
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"Trainer: generator must be a torch.Generator, got {type(generator).__name__}")
        if not isinstance(steps, int) or steps < 0:
            raise ValueError(f"Trainer: steps must be an int >= 0, got {steps!r}")
        if not isinstance(checkpoint_every, int) or checkpoint_every < 0:
            raise ValueError(f"Trainer: checkpoint_every must be an int >= 0 (0: only at the end), "
                             f"got {checkpoint_every!r}")
        if grad_clip is not None and not (isinstance(grad_clip, (int, float)) and grad_clip > 0):
            raise ValueError(f"Trainer: grad_clip must be None or a number > 0, got {grad_clip!r}")
        if not isinstance(keep_last, int) or keep_last < 1:
            raise ValueError(f"Trainer: keep_last must be an int >= 1, got {keep_last!r}")
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.sample_batch = sample_batch
        self.generator = generator
        self.steps = steps
        self.grad_clip = grad_clip
        self.checkpoint_dir = None if checkpoint_dir is None else os.fspath(checkpoint_dir)
        self.checkpoint_every = checkpoint_every
        self.keep_last = keep_last
        self.config = dict(config or {})
        self.extra_state = dict(extra_state or {})
        self.device = torch.device(device) if device is not None else _model_device(model)
        self.progress = progress
        self.desc = desc
        self.on_step = on_step
        self.step = 0
        self.losses: list[float] = []
        self.rank, self.world = dist_info()

    # ------------------------------------------------------- checkpoints --
    def state_dict(self) -> dict:
        """Everything a resume needs. Under DDP a collective (every rank's RNG
        state is gathered), so every rank must call it at the same step."""
        rng = capture_rng_state(self.device)
        if self.world > 1:
            import torch.distributed as dist

            per_rank: list = [None] * self.world
            dist.all_gather_object(per_rank, rng)
        else:
            per_rank = [rng]
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "config": self.config,
            "losses": list(self.losses),
            "rng": {"batch_generator": self.generator.get_state(), "per_rank": per_rank},
            "world_size": self.world,
            "extra": self.extra_state,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore from a checkpoint dict (after checking its config matches)."""
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"Trainer: checkpoint format {state.get('format')!r} is not the "
                             f"supported format {CHECKPOINT_FORMAT}")
        check_config(state.get("config", {}), self.config)
        unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            if state.get("scheduler") is None:
                raise ValueError("Trainer: the checkpoint has no LR scheduler state but this run uses one")
            self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.losses = [float(x) for x in state["losses"]]
        self.generator.set_state(state["rng"]["batch_generator"])
        per_rank = state["rng"]["per_rank"]
        if len(per_rank) != self.world:
            warnings.warn(f"resuming a {len(per_rank)}-process checkpoint with {self.world} processes: "
                          f"the global RNG (dropout) will not continue exactly as it would have")
        restore_rng_state(per_rank[self.rank % len(per_rank)], self.device)

    def save(self) -> Optional[str]:
        """Write a checkpoint of the current step (rank 0 only; a collective
        under DDP). Returns its path on rank 0, None elsewhere."""
        state = self.state_dict()
        if self.rank != 0 or self.checkpoint_dir is None:
            return None
        path = save_checkpoint(os.path.join(self.checkpoint_dir, checkpoint_name(self.step)), state)
        prune_checkpoints(self.checkpoint_dir, self.keep_last)  # only once the new one is on disk
        return path

    def resume(self) -> str:
        """Load the newest intact checkpoint of ``checkpoint_dir`` (warning
        about each damaged newer one); returns its path."""
        if self.checkpoint_dir is None:
            raise ValueError("Trainer: resume needs a checkpoint_dir")
        try:
            # On the CPU: RNG states must be CPU byte tensors; load_state_dict moves
            # the model's and optimizer's tensors to their parameters' device.
            path, state = load_newest_intact(self.checkpoint_dir, map_location="cpu")
        except FileNotFoundError as e:
            raise FileNotFoundError(f"cannot resume: {e}") from None
        self.load_state_dict(state)
        return path

    # ------------------------------------------------------------ training --
    def fit(self, resume: bool = False) -> TrainResult:
        """Train up to ``steps`` steps (from the newest checkpoint if ``resume``)."""
        last_checkpoint = None
        if resume:
            last_checkpoint = self.resume()
        elif self.checkpoint_dir is not None and list_checkpoints(self.checkpoint_dir):
            raise FileExistsError(f"{self.checkpoint_dir!r} already holds checkpoints of another run: "
                                  f"resume it, or train into an empty directory")
        writer = self.rank == 0 and self.checkpoint_dir is not None
        if writer:
            os.makedirs(self.checkpoint_dir, exist_ok=True)
            remove_stale_temporaries(self.checkpoint_dir)
            # A killed run may have logged steps past its last checkpoint: the
            # log restarts from the checkpoint's history.
            _rewrite_loss_log(os.path.join(self.checkpoint_dir, LOSS_LOG), self.losses)
        start_step, seconds, tokens = self.step, 0.0, 0
        if self.step >= self.steps:
            return TrainResult(list(self.losses), start_step, self.step, 0.0, 0, last_checkpoint)

        from tqdm import tqdm

        bar = tqdm(total=self.steps, initial=self.step, desc=self.desc, unit="step", dynamic_ncols=True,
                   disable=not (self.progress and self.rank == 0))
        log = open(os.path.join(self.checkpoint_dir, LOSS_LOG), "a") if writer else None
        self.model.train()
        interrupted = False
        try:
            with _sigint_at_step_boundary() as stop_requested:
                while self.step < self.steps:
                    t0 = time.perf_counter()
                    loss, batch_tokens = self._train_step()
                    seconds += time.perf_counter() - t0
                    tokens += batch_tokens
                    self.losses.append(loss)
                    if log is not None:
                        log.write(json.dumps({"step": self.step, "loss": loss}) + "\n")
                        log.flush()
                    bar.set_postfix({"loss": f"{loss:.4f}", "tokens/s": f"{tokens / max(seconds, 1e-9):,.0f}"},
                                    refresh=False)
                    bar.update(1)
                    if self.on_step is not None:
                        self.on_step(self.step, loss)
                    interrupted = self._agree(stop_requested())
                    if self.checkpoint_dir is not None and (
                            interrupted or self.step == self.steps
                            or (self.checkpoint_every and self.step % self.checkpoint_every == 0)):
                        last_checkpoint = self.save() or last_checkpoint
                    if interrupted:
                        break
        finally:
            bar.close()
            if log is not None:
                log.close()
        if interrupted and self.rank == 0:
            print(f"interrupted: stopped after step {self.step}"
                  + (f", saved {last_checkpoint}" if last_checkpoint else ""), file=sys.stderr, flush=True)
        return TrainResult(list(self.losses), start_step, self.step, seconds, tokens, last_checkpoint,
                           interrupted=interrupted)

    def _agree(self, flag: bool) -> bool:
        """Under DDP every rank stops at the same step if any rank was interrupted."""
        if self.world == 1:
            return flag
        import torch.distributed as dist

        t = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def _train_step(self) -> tuple[float, int]:
        """One optimizer step; returns (global loss, global tokens)."""
        batch = self.sample_batch(self.generator)          # the global batch, the same on every rank
        if isinstance(batch, torch.Tensor):
            batch = (batch,)
        local = [_rank_slice(t, self.rank, self.world).to(self.device, non_blocking=True) for t in batch]
        self.optimizer.zero_grad(set_to_none=True)
        out = self.model(*local)
        loss = out if isinstance(out, torch.Tensor) else out[1]
        if loss is None or loss.dim() != 0:
            raise ValueError("Trainer: model(*batch) must return a scalar loss or (output, loss)")
        loss.backward()                                    # DDP all-reduces (averages) the gradients here
        global_loss = loss.detach()
        if self.world > 1:
            import torch.distributed as dist

            global_loss = global_loss.clone()
            dist.all_reduce(global_loss)                   # sum of the ranks' means ...
            global_loss /= self.world                      # ... / world = the global batch's mean
        value = global_loss.item()
        # Checked before the update, so a bad step leaves the weights as they were.
        if not math.isfinite(value):
            raise FloatingPointError(f"Trainer: the loss is {value} at step {self.step + 1}; the weights are "
                                     f"left as after step {self.step}: lower the learning rate or check the data")
        if self.grad_clip is not None:
            # Under DDP every rank holds the same averaged gradients: the same clip everywhere.
            norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            if not math.isfinite(norm.item()):
                raise FloatingPointError(f"Trainer: the gradient norm is {norm.item()} at step {self.step + 1}; "
                                         f"the weights are left as after step {self.step}")
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.step += 1
        return value, batch[0].numel()


# ------------------------------------------------------------------ helpers --
@contextlib.contextmanager
def _sigint_at_step_boundary():
    """While training, the first Ctrl-C (SIGINT) only asks to stop: the loop
    finishes its step, saves and returns. A second one interrupts at once.
    (Only the main thread can handle signals; elsewhere Ctrl-C is untouched.)"""
    requested = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return

    def handler(signum, frame):
        if requested:
            raise KeyboardInterrupt
        requested.append(True)
        print("\nCtrl-C: stopping after this step and saving (press again to stop at once)",
              file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(requested)
    finally:
        signal.signal(signal.SIGINT, previous)


def check_config(saved: dict, current: dict) -> None:
    """Raise ConfigMismatchError naming every setting that differs."""
    diffs = [f"{k}: checkpoint has {saved.get(k, '<unset>')!r}, this run has {current.get(k, '<unset>')!r}"
             for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]
    if diffs:
        raise ConfigMismatchError("cannot resume: the checkpoint was trained with a different configuration:\n  "
                                  + "\n  ".join(diffs)
                                  + "\nresume with the same settings, or start a new run in another directory")


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _rewrite_loss_log(path: str, losses: Sequence[float]) -> None:
    """Replace the loss log with ``losses`` (steps 1..n), atomically."""
    tmp = path + ".rewrite"
    with open(tmp, "w") as f:
        for i, loss in enumerate(losses, start=1):
            f.write(json.dumps({"step": i, "loss": loss}) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_loss_log(path: str) -> list[float]:
    """The losses of a ``losses.jsonl`` log, in step order."""
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r["loss"] for r in sorted(rows, key=lambda r: r["step"])]
