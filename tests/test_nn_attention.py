"""fusedseq.nn.attention.SelfAttention: fused vs reference backend, explicit
attention weights, torch.nn.MultiheadAttention with the weights copied, and
bad arguments."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from conftest import dtype_params, rel_err, tolerance
from fusedseq.nn.attention import SelfAttention

# (d_model, n_heads, n_kv_heads, causal); head_dim 32 so the CUDA variants
# run on the GPU kernels' head dims too.
CASES = [
    (64, 2, None, False),
    (64, 2, None, True),
    (128, 4, 2, False),   # grouped-query: 2 query heads per K/V head
    (128, 4, 1, True),    # multi-query, causal
]


def case_id(case):
    d, h, hkv, causal = case
    return f"d{d}_h{h}_kv{hkv or h}_{'causal' if causal else 'full'}"


def randomize(module: nn.Module, make) -> nn.Module:
    """Fresh Gaussian parameters (biases too, so they are exercised), float64."""
    module.double()
    with torch.no_grad():
        for p in module.parameters():
            fan_in = p.shape[-1] if p.dim() > 1 else 4
            p.copy_(make(*p.shape, dtype=torch.float64, scale=fan_in ** -0.5))
    return module


def forward_backward(module: nn.Module, x: torch.Tensor, cotangent: torch.Tensor):
    """Output and the gradients of <output, cotangent> w.r.t. x and every parameter."""
    x = x.detach().clone().requires_grad_(True)
    out = module(x)
    names = ["x"] + [n for n, _ in module.named_parameters()]
    grads = torch.autograd.grad(out, [x] + list(module.parameters()), cotangent.to(out.dtype))
    return out.detach(), dict(zip(names, grads))


@pytest.mark.ops("attention_fwd", "attention_bwd")
@pytest.mark.parametrize("dtype", dtype_params([torch.float32, torch.float64]))
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_fused_matches_reference(case, dtype, device, make):
    """Both backends, in ``dtype`` on ``device``, against the reference backend
    in float64 on the same (rounded) parameters: output and every gradient."""
    d_model, n_heads, n_kv_heads, causal = case
    B, N = 2, 7
    module = randomize(SelfAttention(d_model, n_heads, n_kv_heads, is_causal=causal), make)
    module.to(dtype).double()  # round the parameters to dtype once, for every run
    x = make(B, N, d_model, dtype=dtype).double()
    cot = make(B, N, d_model, dtype=dtype).double()

    module.backend = "reference"
    ref_out, ref_grads = forward_backward(module, x, cot)

    for backend in ("fused", "reference"):
        run = copy.deepcopy(module).to(device=device, dtype=dtype)
        run.backend = backend
        out, grads = forward_backward(run, x.to(device, dtype), cot.to(device, dtype))
        tol = tolerance(dtype)
        assert out.dtype == dtype and out.device.type == device
        assert rel_err(out, ref_out) <= tol, f"{backend}: output error {rel_err(out, ref_out):.3g}"
        assert set(grads) == set(ref_grads)
        for name, g in grads.items():
            err = rel_err(g, ref_grads[name])
            assert err <= tol, f"{backend}: grad of {name}: relative error {err:.3g} > {tol:.3g}"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_attention_weights_are_the_softmax_the_forward_uses(case, make):
    d_model, n_heads, n_kv_heads, causal = case
    B, N = 3, 6
    module = randomize(SelfAttention(d_model, n_heads, n_kv_heads, is_causal=causal), make)
    x = make(B, N, d_model, dtype=torch.float64)

    weights = module.attention_weights(x)                                     # (B, Hq, N, N)
    assert weights.shape == (B, n_heads, N, N)
    assert torch.all(weights >= 0)
    assert torch.allclose(weights.sum(-1), torch.ones(B, n_heads, N, dtype=torch.float64), rtol=0, atol=1e-12)
    above_diagonal = torch.ones(N, N, dtype=torch.bool).triu(1)
    if causal:
        assert torch.all(weights[..., above_diagonal] == 0)
        assert torch.all(weights[..., 0, 0] == 1)  # the first query sees only itself
    else:
        assert torch.all(weights[..., above_diagonal] > 0)

    # weights @ V, heads merged and projected, is the forward of both backends.
    _, _, v = module.project(x)                                               # (B, Hkv, N, D)
    v = v.repeat_interleave(n_heads // module.n_kv_heads, dim=1)              # (B, Hq, N, D)
    by_hand = module.out_proj((weights @ v).transpose(1, 2).reshape(B, N, d_model))
    for backend in ("fused", "reference"):
        module.backend = backend
        err = rel_err(module(x), by_hand)
        assert err <= 1e-12, f"{backend}: forward differs from weights @ V by {err:.3g}"


@pytest.mark.parametrize("backend", ["fused", "reference"])
@pytest.mark.parametrize("causal", [False, True])
def test_matches_torch_multihead_attention(causal, backend, make):
    """The PyTorch counterpart with the weights copied: nn.MultiheadAttention's
    in_proj_weight is [W_q; W_k; W_v], i.e. q_proj on top of kv_proj."""
    d_model, n_heads, B, N = 48, 3, 2, 9
    mha = randomize(nn.MultiheadAttention(d_model, n_heads, batch_first=True), make)
    ours = SelfAttention(d_model, n_heads, is_causal=causal, backend=backend).double()
    with torch.no_grad():
        ours.q_proj.weight.copy_(mha.in_proj_weight[:d_model])
        ours.kv_proj.weight.copy_(mha.in_proj_weight[d_model:])
        ours.q_proj.bias.copy_(mha.in_proj_bias[:d_model])
        ours.kv_proj.bias.copy_(mha.in_proj_bias[d_model:])
        ours.out_proj.load_state_dict(mha.out_proj.state_dict())

    x = make(B, N, d_model, dtype=torch.float64)
    mask = torch.ones(N, N, dtype=torch.bool).triu(1) if causal else None     # True = may not attend
    x_theirs = x.clone().requires_grad_(True)
    theirs, their_weights = mha(x_theirs, x_theirs, x_theirs, attn_mask=mask, need_weights=True,
                                average_attn_weights=False)
    x_ours = x.clone().requires_grad_(True)
    out = ours(x_ours)
    assert rel_err(out, theirs) <= 1e-12
    assert rel_err(ours.attention_weights(x), their_weights) <= 1e-12

    cot = make(B, N, d_model, dtype=torch.float64)
    (g_theirs,) = torch.autograd.grad(theirs, x_theirs, cot)
    (g_ours,) = torch.autograd.grad(out, x_ours, cot)
    assert rel_err(g_ours, g_theirs) <= 1e-12


@pytest.mark.parametrize("backend", ["fused", "reference"])
def test_causal_output_ignores_the_future(backend, make):
    module = randomize(SelfAttention(32, 4, 2, is_causal=True, backend=backend), make)
    x = make(2, 8, 32, dtype=torch.float64)
    changed = x.clone()
    changed[:, 5:] = make(2, 3, 32, dtype=torch.float64)
    a, b = module(x), module(changed)
    assert torch.allclose(a[:, :5], b[:, :5], rtol=0, atol=1e-13)
    assert (a[:, 5:] - b[:, 5:]).abs().min() > 0


def test_grouped_query_shapes_and_parameter_count():
    module = SelfAttention(64, 8, 2, bias=False)
    assert module.head_dim == 8
    assert module.q_proj.weight.shape == (64, 64)
    assert module.kv_proj.weight.shape == (2 * 2 * 8, 64)  # keys and values of 2 heads
    assert module.q_proj.bias is None and module.kv_proj.bias is None and module.out_proj.bias is None
    assert sum(p.numel() for p in module.parameters()) == 64 * 64 + 32 * 64 + 64 * 64
    q, k, v = module.project(torch.randn(3, 5, 64))
    assert q.shape == (3, 8, 5, 8) and k.shape == (3, 2, 5, 8) and v.shape == (3, 2, 5, 8)


def test_backend_is_a_validated_settable_attribute(make):
    module = randomize(SelfAttention(32, 4), make)
    assert module.backend == "fused"
    x = make(1, 4, 32, dtype=torch.float64)
    fused = module(x)
    module.backend = "reference"
    assert module.backend == "reference"
    assert rel_err(module(x), fused) <= 1e-12
    with pytest.raises(ValueError, match="backend"):
        module.backend = "cuda"
    with pytest.raises(ValueError, match="backend"):
        SelfAttention(32, 4, backend="flash")


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(d_model=30, n_heads=4), ValueError, "d_model.*divisible.*n_heads"),
    (dict(d_model=32, n_heads=4, n_kv_heads=3), ValueError, "n_heads.*multiple.*n_kv_heads"),
    (dict(d_model=0, n_heads=4), ValueError, "d_model"),
    (dict(d_model=32, n_heads=-4), ValueError, "n_heads"),
    (dict(d_model=32, n_heads=4, n_kv_heads=0), ValueError, "n_kv_heads"),
    (dict(d_model=32.0, n_heads=4), TypeError, "d_model"),
    (dict(d_model=32, n_heads=True), TypeError, "n_heads"),
])
def test_constructor_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        SelfAttention(**kwargs)


@pytest.mark.parametrize("shape", [(4, 32), (1, 4, 31), (1, 4, 32, 1), (2, 0, 32)])
def test_forward_rejects_bad_input(shape):
    module = SelfAttention(32, 4)
    with pytest.raises(ValueError, match="'x'"):
        module(torch.randn(*shape))
    with pytest.raises(ValueError, match="'x'"):
        module.attention_weights(torch.randn(*shape))


# ------------------------------------------------- masks, windows, dropout --
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("window", [None, (3, 1), (2, -1)])
@pytest.mark.parametrize("mask_kind", [None, "keypad", "float"])
def test_masks_and_windows_agree_across_backends(mask_kind, window, causal, make):
    """The SDPA names end to end: attn_mask (key padding or additive), a
    window, causality, all combined; fused and reference backends agree on
    the output, every gradient and the explicit attention weights."""
    B, N, d = 2, 11, 32
    module = randomize(SelfAttention(d, 4, 2, is_causal=causal, window=window), make)
    x, cot = make(B, N, d, dtype=torch.float64), make(B, N, d, dtype=torch.float64)
    mask = None
    if mask_kind == "keypad":
        mask = torch.ones(B, 1, 1, N, dtype=torch.bool)
        mask[0, ..., :4] = False
    elif mask_kind == "float":
        mask = make(N, N, dtype=torch.float64)
    results = {}
    for backend in ("fused", "reference"):
        module.backend = backend
        xb = x.clone().requires_grad_(True)
        out = module(xb, mask)
        grads = torch.autograd.grad(out, [xb] + list(module.parameters()), cot)
        results[backend] = (out, grads)
    (a, ga), (b, gb) = results["fused"], results["reference"]
    assert torch.isfinite(a).all()
    assert rel_err(a, b) <= 1e-12
    for x1, x2 in zip(ga, gb):
        assert rel_err(x1, x2) <= 1e-12
    weights = module.attention_weights(x, mask)
    _, _, v = module.project(x)
    by_hand = module.out_proj((weights @ v.repeat_interleave(2, dim=1)).transpose(1, 2).reshape(B, N, d))
    assert rel_err(a, by_hand) <= 1e-12


def test_attention_dropout_only_in_training(make):
    module = randomize(SelfAttention(32, 4, dropout=0.4), make)
    x = make(2, 9, 32, dtype=torch.float64)
    module.eval()
    assert torch.equal(module(x), module(x))
    module.train()
    torch.manual_seed(0)
    a = module(x)
    torch.manual_seed(0)
    assert torch.equal(a, module(x)) and not torch.allclose(a, module(x))
    module.backend = "reference"
    assert torch.isfinite(module(x)).all()


def test_causal_is_the_old_name_of_is_causal():
    assert SelfAttention(32, 4, causal=True).is_causal
    assert SelfAttention(32, 4, is_causal=True).causal
    with pytest.raises(TypeError, match="is_causal"):
        SelfAttention(32, 4, is_causal="yes")
    with pytest.raises(ValueError, match="window"):
        SelfAttention(32, 4, window=(1, -2))
    with pytest.raises(TypeError, match="attn_mask"):
        SelfAttention(32, 4)(torch.randn(1, 3, 32), attn_mask=[[True]])
