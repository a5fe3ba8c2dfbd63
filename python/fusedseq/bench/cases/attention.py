"""Attention: ``fusedseq.attention`` against ``scaled_dot_product_attention``
as it chooses (the note names its choice), each backend the device has forced
with ``torch.nn.attention.sdpa_kernel``, and an eager ``softmax(QKᵀ·scale)V``
that stores the score matrix (``fusedseq.reference.attention``)."""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import fusedseq
from fusedseq import reference

from ..harness import FWD, Path, Setup, case

# Backends worth forcing per device (the CPU has only these two).
BACKENDS = {"cpu": ("FLASH_ATTENTION", "MATH"),
            "cuda": ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH")}
# The float64 reference holds the (B, Hq, Nq, Nk) scores several times and K, V
# expanded to Hq heads; past this many of those elements it covers a leading
# slice of the batch and heads (whole kv-head groups).
REF_SCORES = {"cpu": 1 << 26, "cuda": 1 << 28}


def attention_flops(pairs: float, D: int, mode: str) -> tuple[float, str]:
    """QKᵀ and PV: 4·D per (query head, query, key) pair computed; the backward's five products 2.5× that."""
    fwd = 4.0 * pairs * D
    return (fwd if mode == FWD else 3.5 * fwd), "FLOP"


def _flops(p: dict, mode: str) -> tuple[float, str]:
    """B·Hq·Nq·Nk pairs, halved when causal."""
    return attention_flops(p["B"] * p["H"] * p["N"] * (p.get("Nk") or p["N"]) / (2 if p.get("causal") else 1),
                           p["D"], mode)


def reference_slices(device: torch.device, B: int, H: int, Hkv: int, N: int, Nk: int, D: int):
    """``Setup(ref_slices=, note=)`` for q, k, v, out shaped (B, H|Hkv, N|Nk, D): the
    leading batches and whole kv-head groups the float64 reference can afford."""
    group, budget = H // Hkv, REF_SCORES.get(device.type, REF_SCORES["cuda"])
    units = max(1, budget // (group * Nk * (N + 2 * D)))  # kv heads the reference can afford
    nb, nkv = (1, units) if units < Hkv else (max(1, min(B, units // Hkv)), Hkv)
    if (nb, nkv) == (B, Hkv):
        return None, ""
    sq, skv = (slice(0, nb), slice(0, nkv * group)), (slice(0, nb), slice(0, nkv))
    return [sq, skv, skv, sq], f"errors on b<{nb}, hq<{nkv * group}"


def _sdpa_choice(q, k, v, causal, gqa) -> str:
    """The backend plain SDPA picks here (private torch._fused_sdp_choice; "" if unknown)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            i = int(torch._fused_sdp_choice(q, k, v, is_causal=causal, **({"enable_gqa": True} if gqa else {})))
        return "default=" + next(b.name for b in SDPBackend.__members__.values() if int(b) == i)
    except Exception:  # noqa: BLE001
        return ""


@case("attention", primary="sdpa", work=_flops, cuda_ops=("attention_fwd", "attention_bwd"),
      dtypes={"cpu": [torch.float32], "cuda": [torch.bfloat16, torch.float16]}, shapes={
          "cpu": [dict(B=4, H=8, N=1024, D=64, causal=c) for c in (False, True)],
          # 16k tokens per batch, model width H·D = 2048.
          "cuda": [dict(B=16384 // N, H=2048 // D, N=N, D=D, causal=c) for D in (64, 128)
                   for N in (512, 1024, 2048, 4096, 8192, 16384) for c in (False, True)],
          "quick": [dict(B=1, H=2, N=128, D=32, causal=c) for c in (False, True)]})
def attention(make, B, H, N, D, causal=False, Hkv=None, Nk=None):
    """H query heads; Hkv key/value heads (grouped-query, default H); Nk keys (default N)."""
    Hkv, Nk = Hkv or H, Nk or N
    q, k, v = make(B, H, N, D), make(B, Hkv, Nk, D), make(B, Hkv, Nk, D)
    gqa = {"enable_gqa": True} if Hkv != H else {}  # some backends reject the flag: pass it only when needed

    def sdpa():
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, **gqa)

    paths = {"fused": lambda: fusedseq.attention(q, k, v, causal=causal),
             "sdpa": Path(sdpa, note=_sdpa_choice(q, k, v, causal, gqa))}
    for name in BACKENDS.get(make.device.type, ("MATH",)):
        if hasattr(SDPBackend, name):
            paths[f"sdpa[{name}]"] = Path(sdpa, context=lambda b=getattr(SDPBackend, name): sdpa_kernel([b]))
    paths["eager"] = lambda: reference.attention(q, k, v, causal=causal)

    slices, note = reference_slices(make.device, B, H, Hkv, N, Nk, D)
    return Setup([q, k, v], paths, reference=lambda *t: reference.attention(*t, causal=causal),
                 ref_slices=slices, note=note)
