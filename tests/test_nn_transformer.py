"""fusedseq.nn.transformer: the config, the pre-norm block (against
torch.nn.TransformerEncoderLayer with weights copied) and TransformerLM
(fused vs reference, weight tying, training, generate, errors)."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from conftest import dtype_params, rel_err, tolerance
from fusedseq.nn.transformer import TransformerBlock, TransformerConfig, TransformerLM

V, CTX = 23, 12


def tiny_config(**overrides) -> TransformerConfig:
    kwargs = dict(vocab_size=V, context_length=CTX, d_model=64, n_layers=2, n_heads=2, n_kv_heads=1)
    kwargs.update(overrides)
    return TransformerConfig(**kwargs)


def make_model(seed: int = 0, **overrides) -> TransformerLM:
    torch.manual_seed(seed)
    return TransformerLM(tiny_config(**overrides))


def tokens(gen: torch.Generator, B: int, T: int, device="cpu") -> torch.Tensor:
    return torch.randint(0, V, (B, T), generator=gen).to(device)


def loss_and_grads(model: TransformerLM, idx, targets):
    model.zero_grad(set_to_none=True)
    logits, loss = model(idx, targets)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    return logits.detach(), loss.detach(), grads


# ------------------------------------------------------------- backends --
@pytest.mark.ops("attention_fwd", "attention_bwd")
@pytest.mark.parametrize("dtype", dtype_params([torch.float32, torch.float64]))
def test_fused_matches_reference(dtype, device, make):
    """Logits, loss and every parameter's gradient of both backends (dtype,
    device) against the reference backend in float64 on the same weights."""
    model = make_model(seed=1, n_layers=2, n_heads=2, n_kv_heads=1, d_model=64)  # head_dim 32
    with torch.no_grad():  # fresh, larger-than-init weights, so attention is far from uniform
        for p in model.parameters():
            p.add_(make(*p.shape, dtype=torch.float64, scale=0.05).float())
    model.to(dtype).double()
    gen = make.gen
    idx, targets = tokens(gen, 3, CTX), tokens(gen, 3, CTX)
    model.set_backend("reference")
    ref_logits, ref_loss, ref_grads = loss_and_grads(model, idx, targets)

    tol = tolerance(dtype)
    for backend in ("fused", "reference"):
        run = copy.deepcopy(model).to(device=device, dtype=dtype).set_backend(backend)
        logits, loss, grads = loss_and_grads(run, idx.to(device), targets.to(device))
        assert logits.dtype == dtype and logits.device.type == device
        assert rel_err(logits, ref_logits) <= tol, f"{backend}: logits"
        assert abs(loss.item() - ref_loss.item()) <= tol * ref_loss.item(), f"{backend}: loss"
        assert set(grads) == set(ref_grads)
        for name, g in grads.items():
            err = rel_err(g, ref_grads[name])
            assert err <= tol, f"{backend}: grad of {name}: relative error {err:.3g} > {tol:.3g}"


def test_set_backend_reaches_every_attention_layer_and_not_the_given_config():
    config = tiny_config(n_layers=3)
    model = TransformerLM(config)
    assert [b.attn.backend for b in model.blocks] == ["fused"] * 3
    assert model.set_backend("reference") is model
    assert model.backend == "reference" and model.config.backend == "reference"
    assert [b.attn.backend for b in model.blocks] == ["reference"] * 3
    assert config.backend == "fused"  # the caller's config is not changed
    model.backend = "fused"
    assert [b.attn.backend for b in model.blocks] == ["fused"] * 3
    with pytest.raises(ValueError, match="backend"):
        model.set_backend("sdpa")
    assert TransformerLM(tiny_config(backend="reference")).blocks[0].attn.backend == "reference"


# ---------------------------------------------- PyTorch's own counterpart --
@pytest.mark.parametrize("backend", ["fused", "reference"])
def test_block_matches_torch_transformer_encoder_layer(backend, make):
    """A pre-norm, GELU, causal nn.TransformerEncoderLayer with the weights
    copied computes the same function as TransformerBlock."""
    d, h, d_ff, B, T = 48, 4, 80, 2, 9
    config = TransformerConfig(vocab_size=5, context_length=T, d_model=d, n_layers=1, n_heads=h, d_ff=d_ff,
                               backend=backend)
    block = TransformerBlock(config).double()
    theirs = nn.TransformerEncoderLayer(d, h, dim_feedforward=d_ff, dropout=0.0, activation="gelu",
                                        batch_first=True, norm_first=True).double()
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(make(*p.shape, dtype=torch.float64, scale=0.3))
        a = block.attn
        a.q_proj.weight.copy_(theirs.self_attn.in_proj_weight[:d])
        a.kv_proj.weight.copy_(theirs.self_attn.in_proj_weight[d:])
        a.q_proj.bias.copy_(theirs.self_attn.in_proj_bias[:d])
        a.kv_proj.bias.copy_(theirs.self_attn.in_proj_bias[d:])
        a.out_proj.load_state_dict(theirs.self_attn.out_proj.state_dict())
        block.ln1.load_state_dict(theirs.norm1.state_dict())
        block.ln2.load_state_dict(theirs.norm2.state_dict())
        block.mlp.fc.load_state_dict(theirs.linear1.state_dict())
        block.mlp.proj.load_state_dict(theirs.linear2.state_dict())

    x = make(B, T, d, dtype=torch.float64)
    mask = nn.Transformer.generate_square_subsequent_mask(T, dtype=torch.float64)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ours, ref = block(x1), theirs(x2, src_mask=mask, is_causal=True)
    assert rel_err(ours, ref) <= 1e-12
    cot = make(B, T, d, dtype=torch.float64)
    (g1,), (g2,) = torch.autograd.grad(ours, x1, cot), torch.autograd.grad(ref, x2, cot)
    assert rel_err(g1, g2) <= 1e-12


# ------------------------------------------------------- structure, init --
def test_head_is_tied_to_the_token_embedding():
    model = make_model()
    assert model.head.weight is model.token_embedding.weight
    model.double()
    assert model.head.weight is model.token_embedding.weight  # survives dtype conversion
    c = model.config
    per_block = (2 * 2 * c.d_model                                   # two LayerNorms
                 + c.d_model * c.d_model + c.d_model                  # q_proj
                 + 2 * (c.d_model // c.n_heads) * c.n_kv_heads * (c.d_model + 1)  # kv_proj
                 + c.d_model * c.d_model + c.d_model                  # out_proj
                 + c.d_model * c.d_ff + c.d_ff + c.d_ff * c.d_model + c.d_model)  # MLP
    expected = V * c.d_model + CTX * c.d_model + c.n_layers * per_block + 2 * c.d_model
    assert model.num_parameters() == expected
    # One gradient reaches the shared matrix from both of its uses.
    idx = torch.randint(0, V, (2, 5))
    model(idx, idx)[1].backward()
    assert model.token_embedding.weight.grad is model.head.weight.grad
    # The tie survives a state_dict round trip.
    fresh = TransformerLM(model.config).double()
    fresh.load_state_dict(model.state_dict())
    assert fresh.head.weight is fresh.token_embedding.weight
    assert torch.equal(fresh.head.weight, model.head.weight)


def test_gpt2_initialisation_is_seeded_and_scaled():
    L = 4
    a, b, c = make_model(seed=7, n_layers=L), make_model(seed=7, n_layers=L), make_model(seed=8, n_layers=L)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), f"{name} differs under the same seed"
    assert not torch.equal(a.token_embedding.weight, c.token_embedding.weight)

    def std(name_end):
        w = torch.cat([p.flatten() for n, p in a.named_parameters() if n.endswith(name_end)])
        return w.std().item(), w.numel()

    for name_end, expected in [("q_proj.weight", 0.02), ("mlp.fc.weight", 0.02), ("token_embedding.weight", 0.02),
                               ("attn.out_proj.weight", 0.02 / math.sqrt(2 * L)),
                               ("mlp.proj.weight", 0.02 / math.sqrt(2 * L))]:
        s, n = std(name_end)
        assert abs(s / expected - 1) < 5 / math.sqrt(n), f"{name_end}: std {s:.4g}, expected {expected:.4g}"
    assert all(torch.all(p == 0) for n, p in a.named_parameters() if n.endswith("proj.bias") or n.endswith("fc.bias"))


# ----------------------------------------------------------- forward --
def test_logits_are_causal(make):
    model = make_model(seed=2)
    idx = tokens(make.gen, 2, CTX)
    changed = idx.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % V
    a, _ = model(idx)
    b, _ = model(changed)
    assert torch.allclose(a[:, :7], b[:, :7], rtol=0, atol=1e-6)
    assert (a[:, 7:] - b[:, 7:]).abs().amax() > 1e-4


def test_loss_is_mean_cross_entropy_and_ignores_minus_one(make):
    model = make_model(seed=3)
    idx, targets = tokens(make.gen, 2, 6), tokens(make.gen, 2, 6)
    logits, loss = model(idx, targets)
    by_hand = -logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).mean()
    assert abs(loss.item() - by_hand.item()) < 1e-6
    assert abs(loss.item() - math.log(V)) < 0.2  # an untrained model is close to uniform
    padded = targets.clone()
    padded[:, 4:] = -1
    _, loss_padded = model(idx, padded)
    kept = -logits[:, :4].log_softmax(-1).gather(-1, targets[:, :4].unsqueeze(-1)).mean()
    assert abs(loss_padded.item() - kept.item()) < 1e-6


@pytest.mark.parametrize("backend", ["fused", "reference"])
def test_a_few_adamw_steps_learn_a_repeated_sequence(backend):
    torch.manual_seed(0)
    model = TransformerLM(tiny_config(d_model=32, backend=backend))
    pattern = torch.tensor([3, 14, 15, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9])                # period 13 > context
    idx, targets = pattern[:-1].repeat(2, 1), pattern[1:].repeat(2, 1)              # (2, 12)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-2)
    losses = []
    for _ in range(25):
        _, loss = model(idx, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 2.5                       # about log(23) = 3.1 at the start
    assert losses[-1] < 0.02 * losses[0], f"loss went {losses[0]:.3f} -> {losses[-1]:.3f}"


# ----------------------------------------------------------- generate --
def test_generate_shape_prompt_and_mode(make):
    model = make_model(seed=4)
    prompt = tokens(make.gen, 3, 5)
    for training in (True, False):
        model.train(training)
        out = model.generate(prompt, 20, generator=torch.Generator().manual_seed(0))
        assert model.training is training
        assert out.shape == (3, 25) and out.dtype == torch.long
        assert torch.equal(out[:, :5], prompt)
        assert out.min() >= 0 and out.max() < V
    assert torch.equal(model.generate(prompt, 0), prompt)
    long_prompt = tokens(make.gen, 2, CTX + 7)  # longer than the context: cropped
    assert model.generate(long_prompt, 3, top_k=1).shape == (2, CTX + 10)


def test_generate_top_k_1_is_greedy(make):
    model = make_model(seed=5)
    seq = tokens(make.gen, 2, 3)
    out = model.generate(seq, 15, top_k=1, temperature=0.7, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for _ in range(15):
            logits, _ = model(seq[:, -CTX:])
            seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, seq)


def test_generate_top_k_samples_only_the_k_best(make):
    model = make_model(seed=9)
    prompt = tokens(make.gen, 64, 4)
    out = model.generate(prompt, 1, top_k=3, temperature=5.0, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        best3 = model(prompt)[0][:, -1].topk(3).indices                  # (64, 3)
    assert torch.all((best3 == out[:, -1:]).any(-1))
    assert (best3[:, 0] != out[:, -1]).any()  # not always the best one: it does sample


def test_generate_is_reproducible_with_a_seeded_generator(make):
    model = make_model(seed=6)
    prompt = tokens(make.gen, 2, 4)
    a = model.generate(prompt, 20, temperature=1.5, generator=torch.Generator().manual_seed(11))
    b = model.generate(prompt, 20, temperature=1.5, generator=torch.Generator().manual_seed(11))
    c = model.generate(prompt, 20, temperature=1.5, generator=torch.Generator().manual_seed(12))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(temperature=0.0), ValueError, "temperature"),
    (dict(temperature=-1.0), ValueError, "temperature"),
    (dict(temperature=float("nan")), ValueError, "temperature"),
    (dict(top_k=0), ValueError, "top_k"),
    (dict(top_k=V + 1), ValueError, "top_k"),
    (dict(top_k=2.0), TypeError, "top_k"),
    (dict(max_new_tokens=-1), ValueError, "max_new_tokens"),
])
def test_generate_rejects_bad_arguments(kwargs, error, match):
    model = make_model()
    args = dict(max_new_tokens=3)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        model.generate(torch.zeros(1, 2, dtype=torch.long), **args)


# ------------------------------------------------------ attention maps --
def test_attention_maps(make):
    model = make_model(seed=10, n_layers=3, n_heads=4, n_kv_heads=2)
    model.train()
    idx = tokens(make.gen, 2, 7)
    maps = model.attention_maps(idx)
    assert model.training
    assert len(maps) == 3
    for m in maps:
        assert m.shape == (2, 4, 7, 7) and not m.requires_grad
        assert torch.allclose(m.sum(-1), torch.ones(2, 4, 7), atol=1e-6)
        assert torch.all(m[..., torch.ones(7, 7, dtype=torch.bool).triu(1)] == 0)
    # Layer 0's map is block 0's attention on the embedded tokens.
    x = model.token_embedding(idx) + model.position_embedding(torch.arange(7))
    assert torch.allclose(maps[0], model.blocks[0].attn.attention_weights(model.blocks[0].ln1(x)), atol=1e-7)


# -------------------------------------------------------------- errors --
def test_forward_rejects_bad_input():
    model = make_model()
    with pytest.raises(ValueError, match="context_length"):
        model(torch.zeros(1, CTX + 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        model(torch.zeros(CTX, dtype=torch.long))
    with pytest.raises(ValueError, match="T >= 1"):
        model(torch.zeros(2, 0, dtype=torch.long))
    with pytest.raises(TypeError, match="torch.long"):
        model(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="vocab_size"):
        model(torch.tensor([[1, V]]))
    with pytest.raises(ValueError, match="vocab_size"):
        model(torch.tensor([[-1, 2]]))
    with pytest.raises(ValueError, match="targets"):
        model(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="config"):
        TransformerLM(dict(vocab_size=V))


def test_config_defaults():
    c = TransformerConfig(vocab_size=10, context_length=8, d_model=48, n_layers=1, n_heads=6)
    assert c.d_ff == 4 * 48 and c.n_kv_heads == 6
    assert c.dropout == 0.0 and c.bias is True and c.backend == "fused"


@pytest.mark.parametrize("overrides,error,match", [
    (dict(vocab_size=0), ValueError, "vocab_size"),
    (dict(context_length=-3), ValueError, "context_length"),
    (dict(d_model=30, n_heads=4), ValueError, "divisible"),
    (dict(n_heads=4, n_kv_heads=3), ValueError, "multiple"),
    (dict(n_layers=0), ValueError, "n_layers"),
    (dict(d_ff=0), ValueError, "d_ff"),
    (dict(dropout=1.0), ValueError, "dropout"),
    (dict(dropout=-0.1), ValueError, "dropout"),
    (dict(backend="triton"), ValueError, "backend"),
    (dict(d_model=64.0), TypeError, "d_model"),
    (dict(bias="yes"), TypeError, "bias"),
])
def test_config_rejects_bad_values(overrides, error, match):
    kwargs = dict(vocab_size=V, context_length=CTX, d_model=64, n_layers=2, n_heads=2)
    kwargs.update(overrides)
    with pytest.raises(error, match=match):
        TransformerConfig(**kwargs)


def test_dropout_is_active_in_training_only(make):
    model = make_model(seed=12, dropout=0.3)
    idx = tokens(make.gen, 2, 6)
    model.train()
    a, _ = model(idx)
    b, _ = model(idx)
    assert (a - b).abs().amax() > 1e-3
    model.eval()
    c, _ = model(idx)
    d, _ = model(idx)
    assert torch.equal(c, d)


# ------------------------------------- padding, sliding window, dropout --
@pytest.mark.parametrize("backend", ["fused", "reference"])
def test_left_padded_batch_matches_each_sequence_alone(backend, make):
    """attention_mask hides padding keys and positions count real tokens, so
    a left-padded row gets the logits its sequence gets alone."""
    torch.manual_seed(0)
    model = TransformerLM(TransformerConfig(vocab_size=40, context_length=16, d_model=32, n_layers=2, n_heads=4,
                                            n_kv_heads=2, backend=backend)).double().eval()
    g = torch.Generator().manual_seed(1)
    lengths, T = [9, 4, 6], 9
    idx = torch.randint(0, 40, (3, T), generator=g)
    mask = torch.zeros(3, T, dtype=torch.long)
    for b, n in enumerate(lengths):
        mask[b, T - n:] = 1
    logits, _ = model(idx, attention_mask=mask)
    for b, n in enumerate(lengths):
        alone, _ = model(idx[b:b + 1, T - n:])
        assert rel_err(logits[b, T - n:], alone[0]) <= 1e-12, b


def test_sliding_window_and_attention_dropout_config(make):
    cfg = dict(vocab_size=30, context_length=24, d_model=32, n_layers=2, n_heads=4, sliding_window=4,
               attention_dropout=0.2)
    torch.manual_seed(0)
    fused = TransformerLM(TransformerConfig(**cfg)).double()
    reference_model = copy.deepcopy(fused).set_backend("reference")
    assert fused.blocks[0].attn.window == (3, 0) and fused.blocks[0].attn.dropout == 0.2
    idx = torch.randint(0, 30, (2, 20), generator=torch.Generator().manual_seed(2))
    fused.eval()
    reference_model.eval()
    assert rel_err(fused(idx)[0], reference_model(idx)[0]) <= 1e-12
    # the window really limits what a position sees: changing token 0 leaves positions >= 4 * n_layers alone
    changed = idx.clone()
    changed[:, 0] = (changed[:, 0] + 1) % 30
    a, b = fused(idx)[0], fused(changed)[0]
    assert torch.equal(a[:, 8:], b[:, 8:]) and not torch.equal(a[:, :4], b[:, :4])
    with pytest.raises(ValueError, match="attention_dropout"):
        TransformerConfig(**{**cfg, "attention_dropout": 1.0})
