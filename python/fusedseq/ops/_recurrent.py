"""What the recurrent ops' Python layers share: the batch layouts their
public functions accept, and the refusal of double backward."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import _args


def check_tensors(op: str, required: dict, optional: dict) -> None:
    """TypeError naming the argument unless each of ``required`` is a tensor
    and each of ``optional`` a tensor or None (before anything touches them)."""
    for name, t in required.items():
        _args.tensor(op, name, t)
    for name, t in optional.items():
        _args.optional_tensor(op, name, t)


def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype the kernels compute in (and save workspaces in): float64
    stays float64, everything else is computed in float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def hidden_size(w_hh: Tensor) -> int:
    """H from a (G·H, H) recurrent weight; 1 for a malformed one, so that the
    op itself rejects it with a message naming 'w_hh'."""
    return w_hh.shape[-1] if w_hh.dim() > 0 else 1


def to_time_major(x: Tensor, batch_first: bool) -> tuple[Tensor, bool]:
    """x ``(T, B, I)``, ``(B, T, I)`` if ``batch_first``, or ``(T, I)``
    unbatched -> ``((T, B, I) view, unbatched)``."""
    if x.dim() == 2:
        return x.unsqueeze(1), True
    return (x.transpose(0, 1) if batch_first else x), False


def from_time_major(output: Tensor, unbatched: bool, batch_first: bool) -> Tensor:
    """The inverse of :func:`to_time_major` for an output ``(T, B, H)``."""
    if unbatched:
        return output.squeeze(1)
    return output.transpose(0, 1) if batch_first else output


def batch_state(state: Optional[Tensor], unbatched: bool) -> Optional[Tensor]:
    """A state ``(H,)`` of an unbatched call becomes ``(1, H)``."""
    return state.unsqueeze(0) if (state is not None and unbatched) else state


def zeros_state(x: Tensor, batch_dim: int, H: int) -> Tensor:
    """Zeros ``(B, H)`` for a missing initial state, B = ``x.shape[batch_dim]``."""
    return x.new_zeros(x.shape[batch_dim] if x.dim() > batch_dim else 1, H)


def refuse_double_backward(*op_names: str) -> None:
    """Registers autograd for backward ops that refuses to differentiate them:
    differentiating a gradient (create_graph=True, then backward again) must
    fail loudly rather than return the zeros autograd would otherwise
    produce."""
    for op in op_names:
        public = f"fusedseq.{op.removesuffix('_backward')}"

        def refuse(ctx, *grads, public=public):
            raise RuntimeError(f"fusedseq: double backward through {public} is not supported "
                               "(its backward op is not differentiable)")

        def setup(ctx, inputs, output):
            pass

        torch.library.register_autograd(f"fusedseq::{op}", refuse, setup_context=setup)
