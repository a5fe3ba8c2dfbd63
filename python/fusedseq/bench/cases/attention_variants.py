"""Attention as real models call it (issue 12), each form against
``scaled_dot_product_attention`` given the same function; plain attention of
the same shape is the yardstick for what a mask must save.

==============  ==============================================  ==============================================
variant         fused                                           sdpa
==============  ==============================================  ==============================================
plain           ``attention(q, k, v)``                          ``sdpa(q, k, v)``
keypad          ``attn_mask`` (B, 1, 1, Nk): each sequence's    the same mask
                first quarter of keys is padding (left padding)
random_mask     ``attn_mask`` (N, Nk) bool, each entry True     the same mask
                with probability 1/2: no key tile is skippable
window          ``is_causal``, ``window=(window - 1, 0)``:      ``attn_mask``: the same band
                each query sees itself and the keys before it   (``reference.attention_visible``)
varlen          ``attention_varlen``, causal, over B packed     the right-padded (B, H, N, N) batch with a
                sequences of N, N/2, 3N/4, N/4 tokens (cycled)  causal + key-padding mask; padding and
                                                                unpadding are part of its time
decode          one query (N=1) per sequence against a KV       ``sdpa(..., enable_gqa=True)``
                cache of Nk keys, grouped-query; forward only
==============  ==============================================  ==============================================

Work (the rate column) counts only the **visible** (query, key) pairs: 4·D
FLOPs each per query head forward, 3.5× that with the backward, the same for
every path. That is the useful work any path must do for the answer; the
masked pairs SDPA computes and throws away are not counted (keypad: 3/4 of
the keys; random_mask: the expected half; window: the band; varlen: each
sequence's causal triangle).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import fusedseq
from fusedseq import reference

from ..harness import FWD, MODES, Setup, case
from .attention import attention_flops, reference_slices

VARIANTS = ("plain", "keypad", "random_mask", "window", "varlen", "decode")
WINDOW = 128                                 # keys a query sees in the window variant, itself included
VARLEN_FRACTIONS = (1.0, 0.5, 0.75, 0.25)    # of N, cycled: 4 sequences hold 62.5% of the padded batch's tokens
PADDED = 0.25                                # keypad: the fraction of keys that are padding


def _varlen_lengths(B: int, N: int) -> list[int]:
    return [max(1, int(N * VARLEN_FRACTIONS[b % len(VARLEN_FRACTIONS)])) for b in range(B)]


def _visible_pairs(p: dict) -> float:
    """(query head, query, key) pairs the answer needs: see the module's docstring."""
    B, H, N, variant = p["B"], p["H"], p["N"], p["variant"]
    Nk = p.get("Nk") or N
    if variant == "varlen":
        return H * sum(n * (n + 1) / 2 for n in _varlen_lengths(B, N))
    per_head = {"keypad": N * (Nk - int(Nk * PADDED)), "random_mask": N * Nk / 2,
                "window": float(reference.attention_visible(N, Nk, True, (p.get("window", WINDOW) - 1, 0)).sum())
                }.get(variant, N * Nk)
    return B * H * per_head


def _work(p: dict, mode: str) -> tuple[float, str]:
    return attention_flops(_visible_pairs(p), p["D"], mode)


@case("attention_variants", primary="sdpa", work=_work, cuda_ops=(
          "attention_fwd", "attention_bwd", "attention_varlen_fwd", "attention_varlen_bwd"),
      modes=lambda p: (FWD,) if p.get("variant") == "decode" else MODES,
      dtypes={"cpu": [torch.float32], "cuda": [torch.bfloat16]}, shapes={
          "cpu": (cpu := [dict(variant=v, B=4, H=8, N=1024, D=64, **({"window": WINDOW} if v == "window" else {}))
                          for v in VARIANTS[:-1]]
                  + [dict(variant="decode", B=8, H=32, Hkv=8, N=1, Nk=Nk, D=128) for Nk in (4096, 32768)]),
          "cuda": cpu,
          "quick": [dict(variant=v, B=1, H=2, N=128, D=32, **({"window": WINDOW} if v == "window" else {}))
                    for v in ("plain", "keypad", "window", "varlen")]
                   + [dict(variant="decode", B=2, H=8, Hkv=2, N=1, Nk=512, D=64)]})
def attention_variants(make, variant, B, H, N, D, Hkv=None, Nk=None, window=WINDOW):
    """H query heads, Hkv key/value heads (default H), N queries, Nk keys (default N;
    varlen: N is the longest sequence and Nk must equal it)."""
    if variant not in VARIANTS:
        raise ValueError(f"attention_variants: variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    Hkv, Nk = Hkv or H, Nk or N
    if variant == "varlen":
        if Nk != N:
            raise ValueError(f"attention_variants: varlen is self-attention, so Nk must equal N; got N={N} Nk={Nk}")
        return _varlen(make, B, H, Hkv, N, D)
    q, k, v = make(B, H, N, D), make(B, Hkv, Nk, D), make(B, Hkv, Nk, D)
    gqa = {"enable_gqa": True} if Hkv != H else {}  # some backends reject the flag: pass it only when needed
    fused_kw, sdpa_kw, note = {}, {}, ""
    if variant == "keypad":
        mask = torch.ones(B, 1, 1, Nk, dtype=torch.bool, device=make.device)
        mask[..., : int(Nk * PADDED)] = False
        fused_kw = sdpa_kw = {"attn_mask": mask}
        note = f"first {PADDED:.0%} of keys padded"
    elif variant == "random_mask":
        mask = torch.rand(N, Nk, generator=make.gen, device=make.device) < 0.5
        fused_kw = sdpa_kw = {"attn_mask": mask}
        note = "random bool mask, 50% visible"
    elif variant == "window":
        fused_kw = {"is_causal": True, "window": (window - 1, 0)}
        sdpa_kw = {"attn_mask": reference.attention_visible(N, Nk, True, (window - 1, 0), device=make.device)}
        note = f"causal window of {window} keys (sdpa: as a bool mask)"

    def ref(q, k, v):  # on the leading batches ref_slices keeps: a batched mask is cut to match
        kw = dict(fused_kw)
        if "attn_mask" in kw and kw["attn_mask"].dim() == 4:
            kw["attn_mask"] = kw["attn_mask"][: q.shape[0]]
        return reference.attention(q, k, v, **kw)

    slices, cut = reference_slices(make.device, B, H, Hkv, N, Nk, D)
    return Setup([q, k, v], {"fused": lambda: fusedseq.attention(q, k, v, **fused_kw),
                             "sdpa": lambda: F.scaled_dot_product_attention(q, k, v, **sdpa_kw, **gqa)},
                 reference=ref, ref_slices=slices, note="; ".join(n for n in (note, cut) if n))


def _varlen(make, B, H, Hkv, N, D) -> Setup:
    """Causal self-attention over B sequences of different lengths: fusedseq on the
    packed tokens, SDPA on the right-padded batch; both return the packed tokens."""
    lens = _varlen_lengths(B, N)
    total, N = sum(lens), max(lens)
    dev = make.device
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32, device=dev)
    q, k, v = make(total, H, D), make(total, Hkv, D), make(total, Hkv, D)
    rows = torch.cat([torch.arange(n, device=dev) + b * N for b, n in enumerate(lens)])  # packed -> padded row
    mask = torch.zeros(B, 1, N, N, dtype=torch.bool, device=dev)
    for b, n in enumerate(lens):
        mask[b, :, :n, :n] = reference.attention_visible(n, n, True, device=dev)
    gqa = {"enable_gqa": True} if Hkv != H else {}

    def pad(t):  # (total, h, D) -> (B, h, N, D), zeros after each sequence
        padded = t.new_zeros(B * N, t.shape[1], D).index_copy(0, rows, t)
        return padded.view(B, N, t.shape[1], D).transpose(1, 2)

    def sdpa():
        out = F.scaled_dot_product_attention(pad(q), pad(k), pad(v), attn_mask=mask, **gqa)
        return out.transpose(1, 2).reshape(B * N, H, D).index_select(0, rows)

    def fused():
        return fusedseq.attention_varlen(q, k, v, cu, cu, N, N, causal=True)

    return Setup([q, k, v], {"fused": fused, "sdpa": sdpa},
                 reference=lambda q, k, v: reference.attention_varlen(q, k, v, cu, cu, is_causal=True),
                 note=f"{B} causal sequence{'s' * (B > 1)}, {total} tokens; sdpa: padded to {B}x{N} with a mask")
