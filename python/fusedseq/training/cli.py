"""``python -m fusedseq train``: train a language model on a text corpus, with
atomic checkpoints and an exact ``--resume``.

    python -m fusedseq train --quick                     # a few seconds, tiny model
    python -m fusedseq train --steps 2000 --out run1     # checkpoints every 100 steps
    python -m fusedseq train --steps 2000 --out run1 --resume   # after a kill: carries on
    torchrun --nproc-per-node 2 -m fusedseq train ...    # data-parallel (gloo on CPU, nccl on GPU)

``--out`` receives ``step_*.pt`` checkpoints (the last two are kept),
``losses.jsonl`` (one line per step) and, at the end, ``metrics.json``.
A resumed run's losses equal those of an uninterrupted run with the same
options (bitwise on the CPU with the same thread count). ``--steps``,
``--checkpoint-every`` and ``--device`` may change on resume; any option that
changes the computation may not, and the command says which one differs.

This module is imported whenever the ``fusedseq`` parser is built, so its
top level imports only the standard library.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import sys
import time
import warnings
from typing import Any, Optional

from .. import _argtypes

DESCRIPTION = ("Train the transformer language model (--model lm) or the next-word embedding model "
               "(--model embedding) on a text corpus (default: the corpus shipped with fusedseq). "
               "Checkpoints are written atomically to --out; --resume continues from the newest one "
               "and reproduces the uninterrupted run's losses exactly.")

DEFAULT_OUT = "fusedseq-train-out"
MODELS = ("lm", "embedding")

# Defaults of the options that --quick changes: (full, quick).
SIZE_DEFAULTS = {
    "steps": (600, 40),
    "batch_size": (32, 8),
    "context_length": (32, 16),
    "d_model": (64, 32),
    "n_layers": (2, 2),
    "n_heads": (4, 2),
    "checkpoint_every": (100, 10),
    "warmup": (50, 5),
}
WEIGHT_DECAY = 0.01
NUM_SAMPLES = 3


class TrainCommandError(Exception):
    """A problem with the command's options or its --out folder (exit status 2)."""


# ------------------------------------------------------------------ parsing --
_int_at_least = _argtypes.int_at_least
_non_negative_float = _argtypes.finite_float(0.0, inclusive=True)
_positive_float = _argtypes.finite_float(0.0, inclusive=False)
_dropout = _argtypes.finite_float(0.0, inclusive=True, below=1.0)
_device = _argtypes.device


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``fusedseq train`` (defaults in brackets are full / --quick)."""
    def sized(name: str) -> str:
        full, quick = SIZE_DEFAULTS[name]
        return f"(default: {full}; {quick} with --quick)"

    what = parser.add_argument_group("what to train")
    what.add_argument("--model", choices=MODELS, default="lm",
                      help="lm: the decoder-only TransformerLM; embedding: the next-word NextWordModel "
                           "(default: %(default)s)")
    what.add_argument("--corpus", metavar="PATH", default=None,
                      help="a UTF-8 text file (default: the corpus shipped with fusedseq)")
    what.add_argument("--context-length", type=_int_at_least(2), default=None, metavar="T",
                      help=f"tokens per window {sized('context_length')}")
    what.add_argument("--d-model", type=_int_at_least(1), default=None, metavar="D",
                      help=f"model width (embedding model: embedding and hidden size) {sized('d_model')}")
    what.add_argument("--n-layers", type=_int_at_least(1), default=None, metavar="N",
                      help=f"transformer blocks {sized('n_layers')}")
    what.add_argument("--n-heads", type=_int_at_least(1), default=None, metavar="N",
                      help=f"attention (query) heads {sized('n_heads')}")
    what.add_argument("--n-kv-heads", type=_int_at_least(1), default=None, metavar="N",
                      help="key/value heads, a divisor of --n-heads: grouped-query attention "
                           "(default: --n-heads, plain multi-head attention)")
    what.add_argument("--dropout", type=_dropout, default=0.0, metavar="P",
                      help="dropout probability (default: %(default)s)")
    what.add_argument("--backend", choices=("fused", "reference"), default="fused",
                      help="fused kernels or plain PyTorch (default: %(default)s)")

    how = parser.add_argument_group("how to train")
    how.add_argument("--steps", type=_int_at_least(1), default=None, metavar="N",
                     help=f"optimizer steps in all {sized('steps')}")
    how.add_argument("--batch-size", type=_int_at_least(1), default=None, metavar="B",
                     help=f"windows per step, over all processes {sized('batch_size')}")
    how.add_argument("--lr", type=_positive_float, default=3e-3, metavar="LR",
                     help="AdamW learning rate (default: %(default)s)")
    how.add_argument("--warmup", type=_int_at_least(0), default=None, metavar="N",
                     help=f"steps of linear learning-rate warm-up {sized('warmup')}")
    how.add_argument("--grad-clip", type=_non_negative_float, default=1.0, metavar="NORM",
                     help="clip the gradient norm to this (0: no clipping; default: %(default)s)")
    how.add_argument("--seed", type=_int_at_least(0), default=0, metavar="N",
                     help="seed of the initialisation and of the batches (default: %(default)s)")
    how.add_argument("--device", type=_device, default="cpu", help="cpu, cuda or cuda:N (default: %(default)s)")
    how.add_argument("--threads", type=_int_at_least(0), default=1, metavar="N",
                     help="torch intra-op threads per process; 0 keeps torch's default (default: %(default)s: "
                          "the models are small, so a thread pool costs more than it gives, and on a busy "
                          "machine far more)")
    how.add_argument("--quick", action="store_true", help="a tiny model for a few seconds (smoke test)")

    out = parser.add_argument_group("checkpoints and output")
    out.add_argument("--out", metavar="DIR", default=os.path.join(".", DEFAULT_OUT),
                     help="folder for checkpoints, losses.jsonl and metrics.json (default: %(default)s)")
    out.add_argument("--checkpoint-every", type=_int_at_least(0), default=None, metavar="N",
                     help=f"steps between checkpoints; 0: only at the end {sized('checkpoint_every')}")
    out.add_argument("--resume", action="store_true",
                     help="continue from the newest checkpoint in --out (same options required)")
    out.add_argument("--overwrite", action="store_true",
                     help="delete the checkpoints of an earlier run in --out and start afresh")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    # For tests that must interrupt a run mid-way: sleep this long after each step (not timed).
    out.add_argument("--throttle", type=_non_negative_float, default=0.0, help=argparse.SUPPRESS)


def resolve_sizes(args: argparse.Namespace) -> argparse.Namespace:
    """Fills in every size option left unset from the full or --quick defaults."""
    for name, (full, quick) in SIZE_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    return args


# ----------------------------------------------------------------- helpers --
def training_config(args: argparse.Namespace, corpus_text: str) -> dict:
    """The settings that determine the run's numbers: a resume must match them.
    (steps, checkpoint_every, device, out and the progress bar may change.)"""
    config: dict[str, Any] = {
        "model": args.model,
        "corpus": os.path.abspath(args.corpus) if args.corpus else "<shipped corpus>",
        "corpus_sha256": hashlib.sha256(corpus_text.encode("utf-8")).hexdigest(),
        "context_length": args.context_length,
        "d_model": args.d_model,
        "dropout": args.dropout,
        "backend": args.backend,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "warmup": args.warmup,
        "weight_decay": WEIGHT_DECAY,
        "grad_clip": args.grad_clip,
        "seed": args.seed,
    }
    if args.model == "lm":
        config.update(n_layers=args.n_layers, n_heads=args.n_heads, n_kv_heads=args.n_kv_heads or args.n_heads)
    return config


def build_model(args: argparse.Namespace, tokenizer):
    """The model ``--model`` names, initialised from torch's global RNG."""
    if args.model == "lm":
        from ..nn.transformer import TransformerConfig, TransformerLM

        if args.n_heads % (args.n_kv_heads or args.n_heads):
            raise TrainCommandError(f"--n-kv-heads {args.n_kv_heads} must divide --n-heads {args.n_heads}")
        if args.d_model % args.n_heads:
            raise TrainCommandError(f"--d-model {args.d_model} must be a multiple of --n-heads {args.n_heads}")
        config = TransformerConfig(vocab_size=len(tokenizer), context_length=args.context_length,
                                   d_model=args.d_model, n_layers=args.n_layers, n_heads=args.n_heads,
                                   n_kv_heads=args.n_kv_heads, dropout=args.dropout, backend=args.backend)
        return TransformerLM(config)
    if args.n_kv_heads:
        raise TrainCommandError("--n-kv-heads: the embedding model has no attention; leave it out")
    from ..nn.embedding import NextWordModel

    if args.dropout:
        raise TrainCommandError("--dropout: the embedding model has no dropout; leave it at 0")
    return NextWordModel(_vocabulary(tokenizer), embed_dim=args.d_model, hidden_size=args.d_model,
                         backend=args.backend)


def _vocabulary(tokenizer) -> list[str]:
    """The words of ``tokenizer``, ordered by token id."""
    return list(tokenizer.itos)


def _write_json_atomically(path: str, data: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _init_distributed(device_text: str):
    """Under torchrun (WORLD_SIZE > 1): join the process group and pick this
    rank's device. Returns (device string, whether this process initialised it)."""
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or dist.is_initialized():
        return device_text, False
    on_cuda = device_text.startswith("cuda")
    dist.init_process_group(backend="nccl" if on_cuda else "gloo")
    if on_cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        device_text = f"cuda:{local_rank}"
    return device_text, True


def _samples(model, tokenizer, inputs, seed: int, device) -> list[str]:
    """A few continuations of prompts taken from the corpus (the first 3 words
    of random windows), sampled with a seeded generator."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    rows = torch.randint(inputs.shape[0], (NUM_SAMPLES,), generator=gen)           # (S,)
    prompts = inputs[rows, :3].to(device)                                          # (S, 3)
    device_gen = torch.Generator(device=device).manual_seed(seed)
    out = model.generate(prompts, max_new_tokens=model.config.context_length - 3, temperature=1.0,
                         top_k=None, generator=device_gen)                         # (S, T)
    return [f"{tokenizer.decode(row[:3].tolist())} | {tokenizer.decode(row[3:].tolist())}" for row in out.cpu()]


def _neighbours(model, ids: list[int], count: int = 3) -> list[str]:
    """Nearest words of the ``count`` most frequent words (embedding model)."""
    from collections import Counter

    lines = []
    for word_id, _ in Counter(ids).most_common(count):
        word = model.vocab[word_id]
        near = ", ".join(f"{w} ({c:.2f})" for w, c in model.most_similar(word, k=min(5, len(model.vocab) - 1)))
        lines.append(f"{word}: {near}")
    return lines


# --------------------------------------------------------------------- run --
def train(args: argparse.Namespace) -> dict:
    """Runs the command; returns the final metrics (rank 0; {} on other ranks).
    Raises TrainCommandError for problems with the options or --out."""
    import torch
    from torch.nn.parallel import DistributedDataParallel

    from ..data import WordTokenizer, lm_windows, load_corpus
    from .checkpoint import CorruptCheckpointError, DamagedCheckpointWarning, list_checkpoints, load_newest_intact
    from .trainer import ConfigMismatchError, Trainer, check_config, dist_info, sample_windows

    resolve_sizes(args)
    if args.resume and args.overwrite:
        raise TrainCommandError("--resume and --overwrite contradict each other: pick one")
    device_text, own_group = _init_distributed(args.device)
    device = torch.device(device_text)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainCommandError(f"--device {args.device}: CUDA is not available here; use --device cpu")
    rank, world = dist_info()
    if args.batch_size % world:
        raise TrainCommandError(f"--batch-size {args.batch_size} must be a multiple of the number of "
                                f"processes ({world})")
    try:
        text = load_corpus(args.corpus)
        config = training_config(args, text)
        existing = list_checkpoints(args.out)
        if args.resume:
            with warnings.catch_warnings(record=True) as damaged:
                warnings.simplefilter("always", DamagedCheckpointWarning)
                try:
                    path, saved = load_newest_intact(args.out)
                except FileNotFoundError:
                    raise TrainCommandError(f"--resume: no checkpoint (step_*.pt) in {args.out!r} to resume "
                                            f"from; run without --resume to start") from None
                except CorruptCheckpointError as e:
                    raise TrainCommandError(f"--resume: {e}") from None
            if rank == 0:
                for w in damaged:
                    print(f"fusedseq train: warning: {w.message}", file=sys.stderr, flush=True)
            warnings.simplefilter("ignore", DamagedCheckpointWarning)  # said once, above
            try:
                check_config(saved.get("config", {}), config)
            except ConfigMismatchError as e:
                raise TrainCommandError(f"--resume from {path}: {e}") from None
            tokenizer = WordTokenizer.from_dict(saved["extra"]["tokenizer"])
            del saved
        else:
            if existing and not args.overwrite:
                raise TrainCommandError(f"--out {args.out!r} already holds checkpoints of a run: pass --resume "
                                        f"to continue it, --overwrite to start afresh, or another --out")
            if existing and rank == 0:
                for _, stale in existing:
                    os.unlink(stale)
            if existing and world > 1:
                import torch.distributed as dist

                dist.barrier()                            # no rank may see the old files after this
            tokenizer = WordTokenizer.from_text(text)

        ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)                   # (N,)
        if ids.numel() <= args.context_length:
            raise TrainCommandError(f"--corpus: {ids.numel()} tokens, too few for --context-length "
                                    f"{args.context_length}")
        inputs, targets = lm_windows(ids, args.context_length)                         # (W, T) each

        torch.manual_seed(args.seed)                      # the initialisation (and dropout) stream
        model = build_model(args, tokenizer).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=WEIGHT_DECAY)
        warmup = args.warmup
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0)
        trained = DistributedDataParallel(model) if world > 1 else model
        throttle = args.throttle
        trainer = Trainer(trained, optimizer, sample_windows(inputs, targets, args.batch_size),
                          steps=args.steps, generator=torch.Generator().manual_seed(args.seed),
                          scheduler=scheduler, grad_clip=args.grad_clip or None, checkpoint_dir=args.out,
                          checkpoint_every=args.checkpoint_every, config=config,
                          extra_state={"tokenizer": tokenizer.to_dict()}, device=device,
                          progress=not args.no_progress, desc=f"train {args.model}",
                          on_step=(lambda step, loss: time.sleep(throttle)) if throttle else None)
        if rank == 0:
            n_params = sum(p.numel() for p in model.parameters())
            print(f"fusedseq train: {args.model} ({n_params:,} parameters, vocabulary {len(tokenizer)}, "
                  f"{inputs.shape[0]:,} windows of {args.context_length}), backend={args.backend}, "
                  f"device={device}, processes={world}, threads={torch.get_num_threads()}, steps={args.steps} "
                  f"-> {args.out}", flush=True)
        result = trainer.fit(resume=args.resume)
        if rank != 0:
            return {}
        if result.interrupted:
            again = [a for a in getattr(args, "argv", sys.argv[1:]) if a != "--resume"] + ["--resume"]
            launcher = ["torchrun", "--nproc-per-node", str(world)] if world > 1 else ["python"]
            print(f"fusedseq train: interrupted after step {result.steps} (saved {result.checkpoint}); "
                  f"to continue:\n  {shlex.join([*launcher, '-m', 'fusedseq', *again])}", flush=True)
            return {"interrupted": True, "steps": result.steps}

        metrics: dict[str, Any] = {
            "model": args.model, "backend": args.backend, "device": str(device), "processes": world,
            "steps": result.steps, "resumed_from_step": result.start_step if args.resume else None,
            "final_loss": result.final_loss, "tokens_per_s": result.tokens_per_s,
            "train_seconds": result.seconds, "config": config, "losses": result.losses,
        }
        print(f"final loss {result.final_loss:.4f} at step {result.steps}"
              + (f" (resumed from step {result.start_step})" if args.resume else ""))
        if result.tokens:
            print(f"{result.tokens_per_s:,.0f} tokens/s over {result.steps - result.start_step} steps "
                  f"({result.tokens:,} tokens in {result.seconds:.2f} s)")
        if args.model == "lm":
            metrics["samples"] = _samples(model, tokenizer, inputs, args.seed, device)
            print("samples (prompt | generated):")
        else:
            metrics["neighbours"] = _neighbours(model, ids.tolist())
            print("nearest words (cosine):")
        for line in metrics.get("samples") or metrics["neighbours"]:
            print(f"  {line}")
        _write_json_atomically(os.path.join(args.out, "metrics.json"), metrics)
        return metrics
    finally:
        if own_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def run(args: argparse.Namespace) -> int:
    """Handler of ``fusedseq train``: 0 on success, 2 for bad options or --out,
    130 when Ctrl-C stopped it (after saving)."""
    import torch

    before = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        metrics = train(args)
    except TrainCommandError as e:
        print(f"fusedseq train: error: {e}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(before)
    return 130 if metrics.get("interrupted") else 0
