"""One rank of the 2-process DDP test (tests/test_ddp.py), and the run it is
compared with.

    python tests/_ddp_worker.py RANK WORLD_SIZE PORT OUT_DIR

joins a gloo process group on 127.0.0.1:PORT, wraps the TransformerLM
(backend="fused") in DistributedDataParallel and trains it with the same
:class:`fusedseq.training.Trainer` a single process uses; each rank writes
its final parameters and loss history to OUT_DIR/rank{R}.pt.
"""
from __future__ import annotations

import os
import sys

import torch

from fusedseq.nn.transformer import TransformerConfig, TransformerLM
from fusedseq.training import Trainer, sample_windows

SEED = 2024
VOCAB = 37
CONTEXT = 16
GLOBAL_BATCH = 8
STEPS = 3


def train_run(checkpoint_dir=None, global_batch: int = GLOBAL_BATCH) -> tuple[torch.nn.Module, list[float], list]:
    """Trains the test's model for STEPS steps on ``global_batch`` windows per
    step: alone, or as one rank of a DDP group when one is initialised.
    Returns the (unwrapped) model, the per-step global losses and the input
    batch this process saw at each step."""
    import torch.distributed as dist

    gen = torch.Generator().manual_seed(SEED)
    ids = torch.randint(VOCAB, (4000,), generator=gen)                             # (N,) fresh random text
    inputs = ids[:-1].unfold(0, CONTEXT, CONTEXT).contiguous()                      # (W, T)
    targets = ids[1:].unfold(0, CONTEXT, CONTEXT).contiguous()                      # (W, T)
    torch.manual_seed(SEED)
    model = TransformerLM(TransformerConfig(vocab_size=VOCAB, context_length=CONTEXT, d_model=32, n_layers=2,
                                            n_heads=4, n_kv_heads=2, bias=False, backend="fused"))
    seen: list[torch.Tensor] = []                                                 # (B_local, T) per step
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    distributed = dist.is_available() and dist.is_initialized()
    trained = torch.nn.parallel.DistributedDataParallel(model) if distributed else model
    optimizer = torch.optim.AdamW(trained.parameters(), lr=1e-2)
    trainer = Trainer(trained, optimizer, sample_windows(inputs, targets, global_batch), steps=STEPS,
                      generator=torch.Generator().manual_seed(SEED + 1), grad_clip=1.0,
                      checkpoint_dir=checkpoint_dir, checkpoint_every=0, progress=False,
                      config={"seed": SEED})
    result = trainer.fit()
    return model, result.losses, seen


def main(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        model, losses, seen = train_run(checkpoint_dir=os.path.join(out, "checkpoints"))
        torch.save({"params": {k: v.detach().clone() for k, v in model.state_dict().items()},
                    "losses": losses, "seen": seen},
                   os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
