"""Attention as real models call it (issue 12), each case against SDPA given the
same function: masks (key padding, a random mask that hides nothing whole),
a sliding window, packed variable-length sequences (SDPA runs them padded,
with a mask) and decoding (one query per sequence against a long KV cache).
Plain attention of the same shape is a case too, the yardstick for what a
mask must save."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

import fusedseq
from fusedseq import reference

from ..case import Case, CaseSetup, Impl, Reference, float64_leaves, generator_for, leaf, random_tensor
from ..flops import FWD, FWD_BWD, attention_flops

OP = "attention_variants"
PRIMARY = "sdpa"  # the PyTorch path the summary compares with


@dataclass(frozen=True)
class Variant:
    kind: str  # "plain" | "keypad" | "random_mask" | "window" | "varlen" | "decode"
    B: int
    Hq: int
    Hkv: int
    Nq: int
    Nk: int
    D: int
    modes: tuple = (FWD, FWD_BWD)

    def label(self) -> str:
        heads = f"H={self.Hq}" if self.Hq == self.Hkv else f"Hq={self.Hq} Hkv={self.Hkv}"
        lens = f"N={self.Nq}" if self.Nq == self.Nk else f"Nq={self.Nq} Nk={self.Nk}"
        what = {"plain": "no mask", "keypad": "key padding 25%", "random_mask": "random bool mask 50%",
                "window": "causal window 128", "varlen": "varlen 4 seqs (SDPA: padded + mask)",
                "decode": "decode"}[self.kind]
        return f"{what}: B={self.B} {heads} {lens} D={self.D}"


PREFILL = dict(B=4, Hq=8, Hkv=8, Nq=1024, Nk=1024, D=64)
CPU_VARIANTS = [Variant("plain", **PREFILL), Variant("keypad", **PREFILL), Variant("random_mask", **PREFILL),
                Variant("window", **PREFILL), Variant("varlen", **PREFILL),
                Variant("decode", 8, 32, 8, 1, 4096, 128, (FWD,)),
                Variant("decode", 8, 32, 8, 1, 32768, 128, (FWD,))]
QUICK_VARIANTS = [Variant(k, 1, 2, 2, 128, 128, 32) for k in ("plain", "keypad", "window", "varlen")] + [
    Variant("decode", 2, 8, 2, 1, 512, 64, (FWD,))]
WINDOW = (127, 0)  # with is_causal: each query sees itself and the 127 keys before it
VARLEN_FRACTIONS = (1.0, 0.5, 0.75, 0.25)  # of Nq: the packed batch has 62.5% of the padded one's tokens


def default_shapes(device: torch.device, quick: bool) -> list[Variant]:
    return QUICK_VARIANTS if quick else CPU_VARIANTS


def default_dtypes(device: torch.device) -> list[torch.dtype]:
    return [torch.bfloat16] if device.type == "cuda" else [torch.float32]


def _key_padding(v: Variant, device) -> torch.Tensor:
    """(B, 1, 1, Nk): each sequence's first quarter of keys is padding (left padding)."""
    mask = torch.ones(v.B, 1, 1, v.Nk, dtype=torch.bool, device=device)
    mask[..., : v.Nk // 4] = False
    return mask


def _build(v: Variant, device: torch.device, dtype: torch.dtype, seed: int) -> CaseSetup:
    g = generator_for(device, seed)
    if v.kind == "varlen":
        return _build_varlen(v, device, dtype, g)
    q = leaf(random_tensor((v.B, v.Hq, v.Nq, v.D), dtype, device, g))
    k = leaf(random_tensor((v.B, v.Hkv, v.Nk, v.D), dtype, device, g))
    val = leaf(random_tensor((v.B, v.Hkv, v.Nk, v.D), dtype, device, g))
    grad_output = random_tensor((v.B, v.Hq, v.Nq, v.D), dtype, device, g)
    gqa = v.Hq != v.Hkv
    kw_fused, kw_sdpa, kw_ref = {}, {}, {}
    if v.kind == "keypad":
        mask = _key_padding(v, device)
        kw_fused = kw_sdpa = kw_ref = dict(attn_mask=mask)
    elif v.kind == "random_mask":
        mask = torch.rand(v.Nq, v.Nk, generator=torch.Generator().manual_seed(seed)).to(device) < 0.5
        kw_fused = kw_sdpa = kw_ref = dict(attn_mask=mask)
    elif v.kind == "window":
        kw_fused = kw_ref = dict(is_causal=True, window=WINDOW)
        kw_sdpa = dict(attn_mask=reference.attention_visible(v.Nq, v.Nk, True, WINDOW, device=device))

    def sdpa():
        return F.scaled_dot_product_attention(q, k, val, **kw_sdpa, **({"enable_gqa": True} if gqa else {}))

    impls = [Impl("fused", lambda: fusedseq.attention(q, k, val, **kw_fused), [q, k, val], fused=True),
             Impl("sdpa", sdpa, [q, k, val])]

    # float64 reference on the first sequence and key/value head (a whole GQA group):
    # the decode caches are GBs in float64.
    nq = v.Hq // v.Hkv

    def compute_reference(with_grads: bool) -> Reference:
        ins = float64_leaves([q[:1, :nq], k[:1, :1], val[:1, :1]], with_grads)
        ref_kw = {n: (t[:1] if n == "attn_mask" and t.dim() == 4 else t) for n, t in kw_ref.items()}
        out = reference.attention(*ins, **ref_kw)
        grads = list(torch.autograd.grad(out, ins, grad_output[:1, :nq].double())) if with_grads else None
        return Reference(out.detach(), grads, select_output=lambda o: o[:1, :nq],
                         select_grads=lambda gs: [gs[0][:1, :nq], gs[1][:1, :1], gs[2][:1, :1]],
                         note="errors on b=0, one kv-head group")

    return CaseSetup(impls, grad_output, compute_reference)


def _build_varlen(v: Variant, device: torch.device, dtype: torch.dtype, g) -> CaseSetup:
    """Causal self-attention over B sequences of different lengths: fusedseq
    packed (no padding), SDPA on the right-padded batch with a causal +
    key-padding mask, both returning the packed tokens."""
    lens = [max(1, int(v.Nq * f)) for f in VARLEN_FRACTIONS[: v.B]]
    total, N = sum(lens), max(lens)
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32, device=device)
    q = leaf(random_tensor((total, v.Hq, v.D), dtype, device, g))
    k = leaf(random_tensor((total, v.Hkv, v.D), dtype, device, g))
    val = leaf(random_tensor((total, v.Hkv, v.D), dtype, device, g))
    grad_output = random_tensor((total, v.Hq, v.D), dtype, device, g)
    index = torch.cat([torch.arange(n, device=device) + b * N for b, n in enumerate(lens)])  # packed -> padded rows
    mask = torch.zeros(len(lens), 1, N, N, dtype=torch.bool, device=device)
    for b, n in enumerate(lens):
        mask[b, :, :n, :n] = reference.attention_visible(n, n, True, device=device)

    def pad(t):  # (total, H, D) -> (B, H, N, D)
        out = t.new_zeros(len(lens) * N, t.shape[1], t.shape[2]).index_copy(0, index, t)
        return out.view(len(lens), N, t.shape[1], t.shape[2]).transpose(1, 2)

    def sdpa():
        out = F.scaled_dot_product_attention(pad(q), pad(k), pad(val), attn_mask=mask,
                                             **({"enable_gqa": True} if v.Hq != v.Hkv else {}))
        return out.transpose(1, 2).reshape(len(lens) * N, v.Hq, v.D).index_select(0, index)

    impls = [Impl("fused", lambda: fusedseq.attention_varlen(q, k, val, cu, cu, N, N, causal=True), [q, k, val],
                  fused=True),
             Impl("sdpa", sdpa, [q, k, val], note=f"padded to {len(lens)}x{N} ({total} real tokens)")]

    def compute_reference(with_grads: bool) -> Reference:
        ins = float64_leaves([q, k, val], with_grads)
        out = reference.attention_varlen(*ins, cu, cu, is_causal=True)
        grads = list(torch.autograd.grad(out, ins, grad_output.double())) if with_grads else None
        return Reference(out.detach(), grads)

    return CaseSetup(impls, grad_output, compute_reference)


def _flops(v: Variant, mode: str) -> float:
    if v.kind == "varlen":
        return sum(attention_flops(1, v.Hq, n, n, v.D, True, mode)
                   for n in (max(1, int(v.Nq * f)) for f in VARLEN_FRACTIONS[: v.B]))
    return attention_flops(v.B, v.Hq, v.Nq, v.Nk, v.D, False, mode)


def make_cases(device: torch.device, dtypes: Sequence[torch.dtype], shapes: Sequence[Variant],
               modes: Sequence[str], seed: int = 0, **_ignored) -> list[Case]:
    cases = []
    for dtype in dtypes:
        for v in shapes:
            run_modes = [m for m in modes if m in v.modes]
            if not run_modes:
                continue
            cases.append(Case(op=OP, device=device, dtype=dtype, label=v.label(),
                              params={"variant": v.kind, "B": v.B, "Hq": v.Hq, "Hkv": v.Hkv, "Nq": v.Nq,
                                      "Nk": v.Nk, "D": v.D},
                              modes=run_modes, flops={m: _flops(v, m) for m in run_modes},
                              build=lambda v=v, dtype=dtype: _build(v, device, dtype, seed)))
    return cases
