"""Attention dropout: the Philox stream (known-answer vectors), the mask the
kernels draw (exposed through attention_dropout_mask), the same mask in the
forward and the backward, SDPA's distribution and scaling, and reproducibility
through torch's generator."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import fusedseq
from fusedseq import reference
from fusedseq.ops.attention import attention_dropout_mask

from conftest import fwd_bwd, rel_err

# The ops these tests run: their emulated (and CUDA) variants need these ops' CUDA kernels.
pytestmark = pytest.mark.ops("attention_fwd", "attention_bwd", "attention_varlen_fwd", "attention_varlen_bwd",
                             "attention_dropout_mask")

ops = torch.ops.fusedseq
M32 = 0xFFFFFFFF


def philox4x32_10(c, k):
    """Philox4x32-10 in plain Python: the reference the kernel's mask is checked against."""
    c, k = list(c), list(k)
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k[0], p1 & M32, (p0 >> 32) ^ c[3] ^ k[1], p0 & M32]
        k = [(k[0] + 0x9E3779B9) & M32, (k[1] + 0xBB67AE85) & M32]
    return c


def test_philox_known_answers():
    """Random123's known-answer vectors for philox4x32_10."""
    assert philox4x32_10([0, 0, 0, 0], [0, 0]) == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    assert philox4x32_10([M32] * 4, [M32, M32]) == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]
    assert philox4x32_10([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0]) == [
        0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]


def python_keep_mask(B, Hq, Nq, Nk, p, seed, offset):
    """The documented stream (params.h, AttnDropout), element by element."""
    threshold = min(round(p * 2 ** 32), M32)
    keep = torch.empty(B, Hq, Nq, Nk, dtype=torch.bool)
    for b in range(B):
        for h in range(Hq):
            for i in range(Nq):
                row = (b * Nq + i) * Hq + h
                for g in range((Nk + 3) // 4):
                    c = offset + g
                    w = philox4x32_10([c & M32, c >> 32, row & M32, row >> 32], [seed & M32, seed >> 32])
                    for t in range(4):
                        if 4 * g + t < Nk:
                            keep[b, h, i, 4 * g + t] = w[t] >= threshold
    return keep


@pytest.mark.ops("attention_dropout_mask")
@pytest.mark.parametrize("seed,offset", [(0, 0), (2 ** 63 - 25, 3), (123456789, 2 ** 40)])
def test_mask_is_the_documented_philox_stream(seed, offset, device):
    q = torch.zeros(2, 3, 5, 4, device=device)
    got = attention_dropout_mask(q, 11, 0.37, seed, offset).cpu()
    assert torch.equal(got, python_keep_mask(2, 3, 5, 11, 0.37, seed, offset))


# (B, Hq, Hkv, Nq, Nk, D, causal, window, mask)
CASES = [
    (2, 4, 2, 13, 21, 8, False, None, None),
    (1, 2, 2, 70, 150, 16, True, None, None),             # several tiles, causal skipping
    (2, 4, 1, 9, 130, 8, False, (10, 3), "keypad"),       # window + key padding, MQA
    (1, 8, 2, 1, 3000, 32, False, None, None),            # decoding: split-KV merge
    (1, 2, 1, 50, 50, 4, False, None, "float"),
]


@pytest.mark.ops("attention_fwd", "attention_bwd", "attention_dropout_mask")
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "B{}_Hq{}_Hkv{}_Nq{}_Nk{}_D{}_c{}_w{}_m{}".format(*c))
def test_forward_and_backward_use_the_same_mask(case, p, device, make):
    """With a fixed key, the forward equals softmax(·) ∘ Z / (1 - p) V for the
    exposed mask Z, and the gradients equal autograd of that same expression:
    so the backward regenerated exactly the forward's mask."""
    B, Hq, Hkv, Nq, Nk, D, causal, window, mk = case
    f64 = dict(dtype=torch.float64)
    q, k, v = make(B, Hq, Nq, D, **f64), make(B, Hkv, Nk, D, **f64), make(B, Hkv, Nk, D, **f64)
    g = make(B, Hq, Nq, D, **f64)
    mask = None
    if mk == "keypad":
        mask = torch.ones(B, 1, 1, Nk, dtype=torch.bool)
        mask[0, ..., :40] = False
    elif mk == "float":
        mask = make(Nq, Nk, **f64)
    seed, offset = 987654321 + Nk, 17
    wl, wr = window or (-1, -1)
    scale = 1.0 / math.sqrt(D)

    def fused(q, k, v):
        m = None if mask is None else mask.to(device=q.device, dtype=q.dtype if mask.is_floating_point() else None)
        return ops.attention_fwd(q, k, v, m, p, causal, scale, wl, wr, seed, offset)[0]

    keep = attention_dropout_mask(q.to(device), Nk, p, seed, offset).cpu()
    assert 0 < keep.float().mean() < 1

    def ref(q, k, v):
        return reference.attention(q, k, v, mask, p, causal, scale, window, dropout_mask=keep)

    out, grads = fwd_bwd(fused, dict(q=q, k=k, v=v), [g], device=device)
    ref_out, ref_grads = fwd_bwd(ref, dict(q=q, k=k, v=v), [g])
    assert rel_err(out[0], ref_out[0]) <= 1e-12
    for n in "qkv":
        assert rel_err(grads[n], ref_grads[n]) <= 1e-12, n
    # float32: the same mask, to fp32 accuracy
    out32, grads32 = fwd_bwd(fused, dict(q=q, k=k, v=v), [g], dtype=torch.float32, device=device)
    assert rel_err(out32[0], ref_out[0]) <= 1e-5
    for n in "qkv":
        assert rel_err(grads32[n], ref_grads[n]) <= 1e-5, n


def test_varlen_draws_the_dense_mask_for_equal_lengths(make):
    """The stream is indexed by (query token in the batch, head, key), not by
    layout: packed sequences of equal length drop exactly what the dense op drops."""
    B, H, N, D, p, seed = 3, 2, 10, 8, 0.4, 31337
    q, k, v = make(B, H, N, D), make(B, H, N, D), make(B, H, N, D)
    dense = ops.attention_fwd(q, k, v, None, p, True, 0.3, -1, -1, seed, 0)[0]
    pack = lambda t: t.transpose(1, 2).reshape(B * N, H, D)  # noqa: E731
    cu = torch.arange(0, B * N + 1, N, dtype=torch.int32)
    packed = ops.attention_varlen_fwd(pack(q), pack(k), pack(v), cu, cu, N, N, p, True, 0.3, -1, -1, seed, 0)[0]
    assert torch.equal(packed, pack(dense))


def test_distribution_and_scaling_match_sdpa(make):
    """Bernoulli(1 - p) keep, kept elements scaled by 1/(1 - p): over many
    draws the mean output is the no-dropout output (unbiased) and the
    element-wise variance matches SDPA's own dropout, which draws from the same
    distribution with a different generator."""
    B, H, Nq, Nk, D, p, n = 1, 2, 4, 24, 8, 0.3, 1500
    q, k, v = make(B, H, Nq, D), make(B, H, Nk, D), make(B, H, Nk, D)
    torch.manual_seed(0)
    ours = torch.stack([fusedseq.attention(q, k, v, dropout_p=p) for _ in range(n)]).double()
    theirs = torch.stack([F.scaled_dot_product_attention(q, k, v, dropout_p=p) for _ in range(n)]).double()
    exact = reference.attention(q.double(), k.double(), v.double())
    sd = theirs.std(0)
    z = (ours.mean(0) - exact) / (sd / math.sqrt(n))  # standard errors away from unbiased
    assert z.abs().max() < 5, z.abs().max()
    var_ratio = (ours.var(0) / theirs.var(0)).mean()
    assert 0.9 < var_ratio < 1.1, var_ratio
    keep = attention_dropout_mask(torch.empty(8, 16, 64, 1), 512, p, 5, 0)
    frac = keep.double().mean().item()
    sigma = math.sqrt(p * (1 - p) / keep.numel())
    assert abs(frac - (1 - p)) < 6 * sigma, (frac, sigma)


def test_rows_heads_and_keys_are_independent():
    keep = attention_dropout_mask(torch.empty(2, 4, 32, 1), 256, 0.5, 77, 0)
    flat = keep.reshape(-1, 256).double()
    corr = torch.corrcoef(flat)  # rows against rows: about 0 off the diagonal
    off = corr[~torch.eye(corr.shape[0], dtype=torch.bool)]
    assert off.abs().max() < 0.35 and off.abs().mean() < 0.08
    # neighbouring keys (the four words of one Philox call) are not correlated either
    lag1 = torch.corrcoef(torch.stack([flat[:, :-1].reshape(-1), flat[:, 1:].reshape(-1)]))[0, 1]
    assert abs(lag1) < 0.03


def test_seed_and_offset_change_the_mask():
    q = torch.empty(1, 2, 8, 1)
    a = attention_dropout_mask(q, 64, 0.5, 1, 0)
    assert not torch.equal(a, attention_dropout_mask(q, 64, 0.5, 2, 0))
    # the offset advances the key counter: offset 1 is the same stream, 4 keys later
    b = attention_dropout_mask(q, 68, 0.5, 1, 1)
    assert torch.equal(a[..., 4:], b[..., :60])


def test_torch_manual_seed_reproduces_and_calls_differ(make):
    q, k, v = make(1, 2, 6, 8), make(1, 2, 9, 8), make(1, 2, 9, 8)
    torch.manual_seed(5)
    o1 = fusedseq.attention(q, k, v, dropout_p=0.5)
    o2 = fusedseq.attention(q, k, v, dropout_p=0.5)
    torch.manual_seed(5)
    assert torch.equal(fusedseq.attention(q, k, v, dropout_p=0.5), o1)
    assert not torch.equal(o1, o2)
    assert torch.equal(fusedseq.attention(q, k, v, dropout_p=0.0), fusedseq.attention(q, k, v))


def test_public_dropout_backward_regenerates_its_mask(make):
    """Through the public function (seed drawn from torch's generator): the
    gradients are those of the mask the forward used, recovered by replaying
    the generator."""
    q, k, v = (make(2, 4, 11, 8, requires_grad=True), make(2, 2, 13, 8, requires_grad=True),
               make(2, 2, 13, 8, requires_grad=True))
    g = make(2, 4, 11, 8)
    torch.manual_seed(11)
    out = fusedseq.attention(q, k, v, dropout_p=0.3, is_causal=True)
    grads = torch.autograd.grad(out, [q, k, v], g)
    torch.manual_seed(11)
    seed = int(torch.randint(0, 2 ** 63 - 1, (), dtype=torch.int64).item())
    keep = attention_dropout_mask(q, 13, 0.3, seed, 0)
    qd, kd, vd = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = reference.attention(qd, kd, vd, None, 0.3, True, dropout_mask=keep)
    ref_grads = torch.autograd.grad(ref, [qd, kd, vd], g.double())
    assert rel_err(out, ref) <= 1e-5
    for a, b in zip(grads, ref_grads):
        assert rel_err(a, b) <= 1e-5
