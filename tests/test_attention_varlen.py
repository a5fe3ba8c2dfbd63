"""fusedseq.attention_varlen: packed variable-length sequences (FlashAttention-2's
varlen API) against the per-sequence reference and against the dense op on
padded batches with a key-padding mask; forward and gradients, causal
(bottom-right), windows, GQA, empty sequences, every dtype."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fusedseq
from fusedseq import reference

from conftest import check_against_reference, dtype_params, fwd_bwd, rel_err

# The ops these tests run: their emulated (and CUDA) variants need these ops' CUDA kernels.
pytestmark = pytest.mark.ops("attention_varlen_fwd", "attention_varlen_bwd", "attention_fwd", "attention_bwd")


def cu_seqlens(lens):
    return torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32)


def packed(make, lens_q, lens_k, Hq, Hkv, D):
    return dict(q=make(sum(lens_q), Hq, D), k=make(sum(lens_k), Hkv, D), v=make(sum(lens_k), Hkv, D))


def sdpa_varlen(q, k, v, cu_q, cu_k, causal=False, scale=None, window=None):
    """PyTorch's own path, one sequence at a time (the low-precision yardstick)."""
    outs = []
    for b in range(cu_q.numel() - 1):
        q0, q1, k0, k1 = int(cu_q[b]), int(cu_q[b + 1]), int(cu_k[b]), int(cu_k[b + 1])
        qb, kb, vb = (t.transpose(0, 1) for t in (q[q0:q1], k[k0:k1], v[k0:k1]))
        if k1 == k0 or q1 == q0:
            outs.append(q.new_zeros(q1 - q0, q.shape[1], v.shape[-1]))
            continue
        visible = reference.attention_visible(q1 - q0, k1 - k0, causal, window, bottom_right=True)
        o = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=visible, scale=scale, enable_gqa=True)
        outs.append(o.transpose(0, 1))
    return torch.cat(outs)


# (id, lens_q, lens_k, Hq, Hkv, D, causal, window)
CASES = [
    ("self_causal_gqa", [5, 17, 64, 1, 100], [5, 17, 64, 1, 100], 4, 2, 16, True, None),
    ("cross_full", [5, 3, 17, 64, 1], [9, 40, 17, 80, 200], 3, 3, 32, False, None),
    ("cross_causal_bottom_right", [5, 3, 17, 64, 1], [9, 40, 17, 80, 200], 4, 1, 8, True, None),
    ("kv_shorter_causal", [20, 60], [12, 50], 2, 2, 8, True, None),
    ("window", [30, 70, 1], [30, 90, 33], 4, 2, 16, False, (6, 2)),
    ("window_causal", [30, 70, 1], [30, 90, 33], 4, 2, 16, True, (6, -1)),
    ("empty_sequences", [0, 7, 0, 9], [4, 0, 0, 9], 2, 1, 8, False, None),
    ("one_long", [300], [300], 2, 2, 64, True, None),
]


@pytest.mark.ops("attention_varlen_fwd", "attention_varlen_bwd")
@pytest.mark.parametrize("dtype", dtype_params())
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_varlen_against_reference(case, dtype, device, make):
    _, lens_q, lens_k, Hq, Hkv, D, causal, window = case
    cu_q, cu_k = cu_seqlens(lens_q), cu_seqlens(lens_k)
    kw = dict(causal=causal, window_size=window or (-1, -1))
    check_against_reference(
        lambda **t: fusedseq.attention_varlen(**t, cu_seqlens_q=cu_q.to(device), cu_seqlens_k=cu_k.to(device),
                                              max_seqlen_q=max(lens_q), max_seqlen_k=max(lens_k), **kw),
        lambda **t: reference.attention_varlen(**t, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, is_causal=causal,
                                               window=window),
        packed(make, lens_q, lens_k, Hq, Hkv, D), dtype, make,
        baseline=lambda **t: sdpa_varlen(t["q"], t["k"], t["v"], cu_q, cu_k, causal, None, window), device=device)


@pytest.mark.parametrize("causal", [False, True])
def test_varlen_equals_padded_dense_with_key_padding(causal, make):
    """The packed batch against the same sequences right-padded into a dense
    (B, H, N, D) batch with a (B, 1, 1, Nk) key-padding mask: outputs and
    gradients agree on the real tokens. (Self-attention, Nq_b == Nk_b, where
    bottom-right and top-left causality coincide.)"""
    lens, H, D = [7, 1, 33, 20], 4, 16
    B, N = len(lens), max(lens)
    cu = cu_seqlens(lens)
    f64 = dict(dtype=torch.float64)
    q, k, v = make(sum(lens), H, D, **f64), make(sum(lens), 2, D, **f64), make(sum(lens), 2, D, **f64)
    g = make(sum(lens), H, D, **f64)

    def pad(t):  # (total, H, D) -> (B, H, N, D), zeros past each length
        out = t.new_zeros(B, N, t.shape[1], t.shape[2])
        for b, n in enumerate(lens):
            out[b, :n] = t[cu[b]:cu[b] + n]
        return out.transpose(1, 2)

    def unpad(t):  # (B, H, N, D) -> (total, H, D)
        return torch.cat([t[b, :, :n].transpose(0, 1) for b, n in enumerate(lens)])

    key_pad = torch.zeros(B, 1, 1, N, dtype=torch.bool)
    for b, n in enumerate(lens):
        key_pad[b, ..., :n] = True
    mask = key_pad & reference.attention_visible(N, N, causal) if causal else key_pad

    out, grads = fwd_bwd(lambda q, k, v: fusedseq.attention_varlen(q, k, v, cu, cu, N, N, causal=causal),
                         dict(q=q, k=k, v=v), [g])
    dense, dense_grads = fwd_bwd(lambda q, k, v: unpad(fusedseq.attention(pad(q), pad(k), pad(v), attn_mask=mask)),
                                 dict(q=q, k=k, v=v), [g])
    assert rel_err(out[0], dense[0]) <= 1e-12
    for n in "qkv":
        assert rel_err(grads[n], dense_grads[n]) <= 1e-12, n


def test_varlen_lse_layout(make):
    lens = [3, 9, 4]
    cu = cu_seqlens(lens)
    q, k, v = make(16, 2, 8), make(16, 2, 8), make(16, 2, 8)
    out, lse = fusedseq.attention_varlen(q, k, v, cu, cu, 9, 9, return_lse=True)
    assert lse.shape == (2, 16) and lse.dtype == torch.float32
    for b, n in enumerate(lens):
        s = slice(int(cu[b]), int(cu[b]) + n)
        ref = reference.attention_lse(q[s].transpose(0, 1).double(), k[s].transpose(0, 1).double())
        assert rel_err(lse[:, s], ref) <= 1e-6


def test_varlen_non_contiguous_views(make):
    """q, k, v as column slices of one fused QKV projection (the usual packed layout)."""
    lens, H, D = [5, 12], 2, 8
    cu = cu_seqlens(lens)
    qkv = make(sum(lens), 3, H, D, dtype=torch.float64)
    q, k, v = qkv.unbind(1)
    assert not q.is_contiguous()
    out = fusedseq.attention_varlen(q, k, v, cu, cu, 12, 12, causal=True)
    assert rel_err(out, reference.attention_varlen(q, k, v, cu, cu, True)) <= 1e-12


def test_varlen_max_seqlen_may_exceed_the_longest(make):
    lens = [4, 6]
    cu = cu_seqlens(lens)
    q, k, v = make(10, 2, 8), make(10, 2, 8), make(10, 2, 8)
    assert torch.equal(fusedseq.attention_varlen(q, k, v, cu, cu, 6, 6),
                       fusedseq.attention_varlen(q, k, v, cu, cu, 4096, 10 ** 9))


def test_varlen_aliases_match_flash_attn_names(make):
    lens = [4, 6]
    cu = cu_seqlens(lens)
    q, k, v = make(10, 2, 8), make(10, 2, 8), make(10, 2, 8)
    a = fusedseq.attention_varlen(q, k, v, cu, cu, 6, 6, 0.0, 0.3, True, (2, 0))  # flash_attn_varlen_func order
    b = fusedseq.attention_varlen(q, k, v, cu, cu, 6, 6, scale=0.3, is_causal=True, window=(2, 0))
    assert torch.equal(a, b)


def test_outputs_fully_written_over_poisoned_memory(make):
    """Outputs, LSE and gradients are allocated fresh over NaN-poisoned heap
    chunks: empty sequences, rows no key reaches (window) and the GQA
    partial sums must all be written, never left as found."""
    from conftest import nbytes, poison_heap
    lens_q, lens_k = [0, 7, 3, 40], [5, 0, 9, 40]
    cu_q, cu_k = cu_seqlens(lens_q), cu_seqlens(lens_k)
    q, k, v = make(50, 4, 16, requires_grad=True), make(54, 2, 16, requires_grad=True), make(54, 2, 16,
                                                                                             requires_grad=True)
    sizes = [nbytes(s, torch.float32) for s in [(50, 4, 16), (54, 2, 16), (4, 50), (4, 54, 16)]]
    poison_heap(*sizes)
    out, lse = fusedseq.attention_varlen(q, k, v, cu_q, cu_k, 40, 40, causal=True, window_size=(2, 0),
                                         return_lse=True)
    poison_heap(*sizes)
    grads = torch.autograd.grad(out, [q, k, v], make(50, 4, 16))
    for t in (out, *grads):
        assert torch.isfinite(t).all()
    assert torch.isneginf(lse[:, 0:7]).all()  # sequence 1 has no keys
    assert torch.equal(out[0:7], torch.zeros_like(out[0:7]))
    ref = reference.attention_varlen(q.double(), k.double(), v.double(), cu_q, cu_k, True, None, (2, 0))
    assert rel_err(out, ref) <= 1e-5
