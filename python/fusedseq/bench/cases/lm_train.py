"""TransformerLM training steps (forward, loss, backward, AdamW), ``backend="fused"``
against ``"reference"`` (SDPA): two copies of one model on one batch, so the
ratio is what the fused attention buys a whole model. Their first losses must
agree (|Δloss| in the note)."""
from __future__ import annotations

import copy

import torch

from ..harness import STEP, Setup, case


@case("lm_train", primary="reference", modes=(STEP,), cuda_ops=("attention_fwd", "attention_bwd"),
      work=lambda p, mode: (p["batch"] * p["context"], "tok"),
      dtypes={"cpu": [torch.float32], "cuda": [torch.bfloat16]}, shapes={
          # The lm example's model, and the same with a 4x longer context (attention's share grows).
          "cpu": [dict(batch=32, context=64, d_model=128, n_layers=4, n_heads=4, vocab=128),
                  dict(batch=8, context=256, d_model=128, n_layers=4, n_heads=4, vocab=128)],
          "cuda": [dict(batch=64, context=256, d_model=512, n_layers=8, n_heads=8, vocab=8192),
                   dict(batch=16, context=1024, d_model=512, n_layers=8, n_heads=8, vocab=8192),
                   dict(batch=8, context=2048, d_model=1024, n_layers=8, n_heads=16, vocab=8192)],
          "quick": [dict(batch=4, context=16, d_model=32, n_layers=2, n_heads=2, vocab=32)]})
def lm_train(make, batch, context, d_model, n_layers, n_heads, vocab):
    from fusedseq.nn.transformer import TransformerConfig, TransformerLM

    config = TransformerConfig(vocab_size=vocab, context_length=context, d_model=d_model, n_layers=n_layers,
                               n_heads=n_heads, backend="fused")
    torch.manual_seed(make.gen.initial_seed())
    models = {"fused": TransformerLM(config).to(make.device, make.dtype)}
    models["reference"] = copy.deepcopy(models["fused"]).set_backend("reference")
    tokens = torch.randint(0, vocab, (batch, context + 1), generator=make.gen, device=make.device)

    def trainer(model):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

        def step():
            opt.zero_grad(set_to_none=True)
            _, loss = model(tokens[:, :-1], tokens[:, 1:])
            loss.backward()
            opt.step()
            return loss.detach()
        return step

    steps = {name: trainer(m.train()) for name, m in models.items()}
    losses = {name: [float(step()) for _ in range(3)] for name, step in steps.items()}
    diff = max(abs(a - b) for a, b in zip(losses["fused"], losses["reference"]))
    agree = diff <= 1e-3 * max(1.0, abs(losses["reference"][0]))
    return Setup([], steps, note=f"|Δloss| {diff:.1e}" + ("" if agree else " LOSSES DIFFER"))
