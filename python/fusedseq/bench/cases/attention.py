"""Attention cases: ``fusedseq.attention`` against
``F.scaled_dot_product_attention`` (its default choice, then each backend
the device has, forced with ``sdpa_kernel``) and a plain eager
``softmax(Q Kᵀ · scale) V`` (``fusedseq.reference.attention``, which stores
the full score matrix)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel

import fusedseq
from fusedseq import reference

from ..case import Case, CaseSetup, Impl, Reference, float64_leaves, generator_for, leaf, random_tensor
from ..flops import attention_flops
from ..sdpa import backends_for, default_choice

OP = "attention"
PRIMARY = "sdpa"  # the PyTorch path the summary compares with

# The float64 reference materialises the (B, Hq, Nq, Nk) scores several times
# (scores, softmax, and their gradients). Above this many score elements in
# all it runs on a leading slice of the batch and heads instead (whole
# kv-head groups, so dK and dV are complete; every head runs the same code).
REF_SCORE_ELEMENTS = {"cpu": 1 << 26, "cuda": 1 << 28}


@dataclass(frozen=True)
class AttnShape:
    B: int
    Hq: int
    N: int  # query length
    D: int
    Hkv: Optional[int] = None  # None: = Hq
    Nk: Optional[int] = None  # None: = N

    @property
    def kv_heads(self) -> int:
        return self.Hkv or self.Hq

    @property
    def kv_len(self) -> int:
        return self.Nk or self.N

    @classmethod
    def parse(cls, text: str) -> "AttnShape":
        """``"B,H,N,D"``, optionally ``",Hkv"`` (grouped-query) and ``",Nk"``."""
        v = [int(x) for x in text.split(",")]
        if not 4 <= len(v) <= 6:
            raise ValueError(f"attention shape must be B,H,N,D[,Hkv[,Nk]], got {text!r}")
        return cls(*v)

    def label(self) -> str:
        heads = f"H={self.Hq}" if self.kv_heads == self.Hq else f"Hq={self.Hq} Hkv={self.kv_heads}"
        lens = f"N={self.N}" if self.kv_len == self.N else f"Nq={self.N} Nk={self.kv_len}"
        return f"B={self.B} {heads} {lens} D={self.D}"


CPU_SHAPES = [AttnShape(4, 8, 1024, 64)]
QUICK_SHAPES = [AttnShape(1, 2, 128, 32)]
# Issue 3's sweep: 16k tokens per batch (B = 16384 / N), model width H·D = 2048.
CUDA_SHAPES = [AttnShape(16384 // N, 2048 // D, N, D)
               for D in (64, 128) for N in (512, 1024, 2048, 4096, 8192, 16384)]


def default_shapes(device: torch.device, quick: bool) -> list[AttnShape]:
    if quick:
        return QUICK_SHAPES
    return CUDA_SHAPES if device.type == "cuda" else CPU_SHAPES


def default_dtypes(device: torch.device) -> list[torch.dtype]:
    if device.type == "cuda":
        return [torch.bfloat16, torch.float16]
    return [torch.float32]


def _sdpa(q, k, v, causal: bool, gqa: bool):
    if gqa:  # only pass enable_gqa when needed: some backends reject the flag
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def _reference_slice(s: AttnShape, device: torch.device) -> tuple[int, int]:
    """(batch entries, kv heads) the float64 reference covers (see REF_SCORE_ELEMENTS)."""
    group = s.Hq // s.kv_heads
    per_kv_head = group * s.N * s.kv_len
    budget = REF_SCORE_ELEMENTS.get(device.type, REF_SCORE_ELEMENTS["cuda"])
    units = max(1, budget // per_kv_head)
    if units < s.kv_heads:
        return 1, units
    return max(1, min(s.B, units // s.kv_heads)), s.kv_heads


def _build(s: AttnShape, causal: bool, device: torch.device, dtype: torch.dtype, seed: int) -> CaseSetup:
    g = generator_for(device, seed)
    q = leaf(random_tensor((s.B, s.Hq, s.N, s.D), dtype, device, g))
    k = leaf(random_tensor((s.B, s.kv_heads, s.kv_len, s.D), dtype, device, g))
    v = leaf(random_tensor((s.B, s.kv_heads, s.kv_len, s.D), dtype, device, g))
    grad_output = random_tensor((s.B, s.Hq, s.N, s.D), dtype, device, g)
    inputs = [q, k, v]
    gqa = s.kv_heads != s.Hq

    chosen = default_choice(q, k, v, causal, gqa)
    impls = [
        Impl("fused", lambda: fusedseq.attention(q, k, v, causal=causal), inputs, fused=True),
        Impl("sdpa", lambda: _sdpa(q, k, v, causal, gqa), inputs,
             note=f"default={chosen}" if chosen else ""),
    ]
    for backend in backends_for(device):
        impls.append(Impl(f"sdpa[{backend.name}]", lambda: _sdpa(q, k, v, causal, gqa), inputs,
                          context=lambda backend=backend: sdpa_kernel([backend])))
    impls.append(Impl("eager", lambda: reference.attention(q, k, v, causal=causal), inputs))

    nb, nkv = _reference_slice(s, device)
    nq = nkv * (s.Hq // s.kv_heads)
    sliced = (nb, nkv) != (s.B, s.kv_heads)

    def compute_reference(with_grads: bool) -> Reference:
        ref_inputs = float64_leaves([q[:nb, :nq], k[:nb, :nkv], v[:nb, :nkv]], with_grads)
        out = reference.attention(*ref_inputs, causal=causal)
        grads = None
        if with_grads:
            grads = list(torch.autograd.grad(out, ref_inputs, grad_output[:nb, :nq].to(torch.float64)))
        return Reference(
            out.detach(), grads,
            select_output=lambda o: o[:nb, :nq],
            select_grads=lambda gs: [gs[0][:nb, :nq], gs[1][:nb, :nkv], gs[2][:nb, :nkv]],
            note=f"errors on b<{nb}, hq<{nq}" if sliced else "")

    return CaseSetup(impls, grad_output, compute_reference)


def make_cases(device: torch.device, dtypes: Sequence[torch.dtype], shapes: Sequence[AttnShape],
               modes: Sequence[str], causal: Sequence[bool] = (False, True), seed: int = 0) -> list[Case]:
    cases = []
    for dtype in dtypes:
        for s in shapes:
            for c in causal:
                cases.append(Case(
                    op=OP, device=device, dtype=dtype,
                    label=s.label() + (" causal" if c else ""),
                    params={"B": s.B, "Hq": s.Hq, "Hkv": s.kv_heads, "Nq": s.N, "Nk": s.kv_len,
                            "D": s.D, "causal": c},
                    modes=list(modes),
                    flops={m: attention_flops(s.B, s.Hq, s.N, s.kv_len, s.D, c, m) for m in modes},
                    build=lambda s=s, c=c, dtype=dtype: _build(s, c, device, dtype, seed),
                ))
    return cases
