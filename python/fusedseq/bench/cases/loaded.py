"""Small ops while every core is busy with other processes: what a user of a
shared machine sees. An op that splits tiny work across threads waits for a
descheduled thread at every join (scheduler time slices, milliseconds), so
this case shows whether small work stays on the calling thread, as ATen's
kernels keep theirs (their grain sizes). Forward only; a few seconds."""
from __future__ import annotations

from ..harness import FWD, REGISTRY, case


def _work(p: dict, mode: str):
    rest = {k: v for k, v in p.items() if k != "op"}
    return REGISTRY[p["op"]].work(rest, mode)


@case("loaded", primary=("sdpa", "nn.RNNCell"), work=_work, modes=(FWD,), loaded=True, cuda_ops=("attention_fwd", "rnn_cell"),
      shapes={"cpu": (cpu := [dict(op="attention", B=1, H=2, N=128, D=32),
                              dict(op="rnn_cell", B=4, I=32, H=32)]), "quick": cpu, "cuda": []})
def loaded(make, op, **params):
    return REGISTRY[op].build(make, **params)
