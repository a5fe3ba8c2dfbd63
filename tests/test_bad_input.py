"""SPEC §5: bad input gets a clear exception naming the argument, raised
before any kernel runs: ValueError for shapes and values, TypeError for
dtypes, devices and layouts. Every check is exercised through the public
function and through the raw torch.ops op."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

import fusedseq

from conftest import cuda_skip_reason

ops = torch.ops.fusedseq
B, I, H, T = 3, 4, 5, 6
F32, F64 = torch.float32, torch.float64


def _t(*shape, dtype=F32):
    g = torch.Generator().manual_seed(sum(shape) + len(shape))
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)


def _int(*shape):
    return torch.ones(*shape, dtype=torch.int64)


def _arg(name: str) -> str:
    """A bare name must appear as ``argument 'name'`` (so that "the dtype of
    'x'" in a message about 'h' does not count for 'x'); anything with a
    space or a quote is a literal fragment of the expected message."""
    if " " in name or "'" in name:
        return re.escape(name)
    return re.escape(f"argument '{name}'")


# ---------------------------------------------------------------- rnn_cell --
def cell_args(**over):
    args = dict(x=_t(B, I), h=_t(B, H), w_ih=_t(H, I), w_hh=_t(H, H), b_ih=_t(H), b_hh=_t(H), nonlinearity="tanh")
    args.update(over)
    return args


# (id, overrides, exception, argument named in the message)
CELL_BAD = [
    # dtypes
    ("x_int", dict(x=_int(B, I)), TypeError, "x"),
    ("h_int", dict(h=_int(B, H)), TypeError, "h"),
    ("w_ih_int", dict(w_ih=_int(H, I)), TypeError, "w_ih"),
    ("w_hh_int", dict(w_hh=_int(H, H)), TypeError, "w_hh"),
    ("b_ih_int", dict(b_ih=_int(H)), TypeError, "b_ih"),
    ("b_hh_bool", dict(b_hh=torch.ones(H, dtype=torch.bool)), TypeError, "b_hh"),
    ("x_complex", dict(x=torch.ones(B, I, dtype=torch.complex64)), TypeError, "x"),
    ("h_f64_vs_x_f32", dict(h=_t(B, H, dtype=F64)), TypeError, "h"),
    ("w_ih_f64", dict(w_ih=_t(H, I, dtype=F64)), TypeError, "w_ih"),
    ("w_hh_bf16", dict(w_hh=_t(H, H, dtype=torch.bfloat16)), TypeError, "w_hh"),
    ("b_ih_f16", dict(b_ih=_t(H, dtype=torch.float16)), TypeError, "b_ih"),
    ("b_hh_f64", dict(b_hh=_t(H, dtype=F64)), TypeError, "b_hh"),
    # ranks
    ("x_3d", dict(x=_t(2, B, I)), ValueError, "x"),
    ("h_3d", dict(h=_t(1, B, H)), ValueError, "h"),
    ("w_ih_1d", dict(w_ih=_t(H * I)), ValueError, "w_ih"),
    ("w_hh_3d", dict(w_hh=_t(1, H, H)), ValueError, "w_hh"),
    ("b_ih_2d", dict(b_ih=_t(1, H)), ValueError, "b_ih"),
    ("b_hh_0d", dict(b_hh=_t()), ValueError, "b_hh"),
    # shapes
    ("h_batch", dict(h=_t(B + 1, H)), ValueError, "h"),
    ("w_ih_cols", dict(w_ih=_t(H, I + 1)), ValueError, "w_ih"),
    ("w_ih_rows", dict(w_ih=_t(H + 1, I)), ValueError, "w_ih"),
    ("w_hh_not_square", dict(w_hh=_t(H, H - 1)), ValueError, "w_hh"),
    ("w_hh_wrong_H", dict(w_hh=_t(H + 1, H + 1)), ValueError, "w_hh"),
    ("b_ih_len", dict(b_ih=_t(H - 1)), ValueError, "b_ih"),
    ("b_hh_len", dict(b_hh=_t(H + 1)), ValueError, "b_hh"),
    # empty tensors
    ("empty_batch", dict(x=_t(0, I), h=_t(0, H)), ValueError, "x"),
    ("empty_input_width", dict(x=_t(B, 0), w_ih=_t(H, 0)), ValueError, "x"),
    ("empty_hidden", dict(h=_t(B, 0), w_ih=_t(0, I), w_hh=_t(0, 0), b_ih=None, b_hh=None), ValueError, "h"),
    ("empty_bias", dict(b_ih=_t(0)), ValueError, "b_ih"),
    # values
    ("nonlinearity_sigmoid", dict(nonlinearity="sigmoid"), ValueError, "nonlinearity"),
    ("nonlinearity_case", dict(nonlinearity="Tanh"), ValueError, "nonlinearity"),
    ("nonlinearity_empty", dict(nonlinearity=""), ValueError, "nonlinearity"),
]


def _call_cell(entry, args):
    if entry == "public":
        return fusedseq.rnn_cell(**args)
    return ops.rnn_cell(args["x"], args["h"], args["w_ih"], args["w_hh"], args["b_ih"], args["b_hh"],
                        args["nonlinearity"])


@pytest.mark.parametrize("entry", ["public", "raw"])
@pytest.mark.parametrize("case", CELL_BAD, ids=[c[0] for c in CELL_BAD])
def test_rnn_cell_bad_input(case, entry):
    _, over, exc, name = case
    with pytest.raises(exc, match=_arg(name)) as info:
        _call_cell(entry, cell_args(**over))
    assert "fusedseq.rnn_cell" in str(info.value)


def test_rnn_cell_message_states_expected_and_got():
    with pytest.raises(ValueError) as info:
        fusedseq.rnn_cell(**cell_args(w_hh=_t(H, 7)))
    msg = str(info.value)
    assert "'w_hh'" in msg and f"({H}, {H})" in msg and f"({H}, 7)" in msg, msg


def test_rnn_cell_unbatched_x_with_batched_h():
    with pytest.raises(ValueError, match=_arg("h")):
        fusedseq.rnn_cell(**cell_args(x=_t(I)))


RNN_CELL_BWD_BAD = [
    ("grad_h_next_shape", dict(grad_h_next=_t(B, H + 1)), ValueError, "grad_h_next"),
    ("grad_h_next_dtype", dict(grad_h_next=_t(B, H, dtype=F64)), TypeError, "grad_h_next"),
    ("h_next_shape", dict(h_next=_t(B + 1, H)), ValueError, "h_next"),
    ("h_next_rank", dict(h_next=_t(B * H)), ValueError, "h_next"),
    ("x_int", dict(x=_int(B, I)), TypeError, "x"),
    ("h_dtype", dict(h=_t(B, H, dtype=torch.bfloat16)), TypeError, "h"),
    ("w_ih_shape", dict(w_ih=_t(H, I + 2)), ValueError, "w_ih"),
    ("w_hh_shape", dict(w_hh=_t(H - 1, H)), ValueError, "w_hh"),
    ("nonlinearity", dict(nonlinearity="gelu"), ValueError, "nonlinearity"),
    ("empty", dict(x=_t(0, I), h=_t(0, H), grad_h_next=_t(0, H), h_next=_t(0, H)), ValueError, "x"),
]


@pytest.mark.parametrize("case", RNN_CELL_BWD_BAD, ids=[c[0] for c in RNN_CELL_BWD_BAD])
def test_rnn_cell_backward_bad_input(case):
    _, over, exc, name = case
    a = dict(grad_h_next=_t(B, H), h_next=_t(B, H), x=_t(B, I), h=_t(B, H), w_ih=_t(H, I), w_hh=_t(H, H),
             nonlinearity="tanh")
    a.update(over)
    with pytest.raises(exc, match=_arg(name)):
        ops.rnn_cell_backward(a["grad_h_next"], a["h_next"], a["x"], a["h"], a["w_ih"], a["w_hh"], a["nonlinearity"])


# --------------------------------------------------------------------- rnn --
def rnn_args(**over):
    args = dict(x=_t(T, B, I), h0=_t(B, H), w_ih=_t(H, I), w_hh=_t(H, H), b_ih=_t(H), b_hh=_t(H),
                nonlinearity="tanh")
    args.update(over)
    return args


RNN_BAD = [
    ("x_int", dict(x=_int(T, B, I)), TypeError, "x"),
    ("h0_int", dict(h0=_int(B, H)), TypeError, "h0"),
    ("w_ih_int", dict(w_ih=_int(H, I)), TypeError, "w_ih"),
    ("w_hh_int", dict(w_hh=_int(H, H)), TypeError, "w_hh"),
    ("b_ih_int", dict(b_ih=_int(H)), TypeError, "b_ih"),
    ("b_hh_int", dict(b_hh=_int(H)), TypeError, "b_hh"),
    ("h0_f64", dict(h0=_t(B, H, dtype=F64)), TypeError, "h0"),
    ("w_ih_bf16", dict(w_ih=_t(H, I, dtype=torch.bfloat16)), TypeError, "w_ih"),
    ("w_hh_f64", dict(w_hh=_t(H, H, dtype=F64)), TypeError, "w_hh"),
    ("b_ih_f64", dict(b_ih=_t(H, dtype=F64)), TypeError, "b_ih"),
    ("b_hh_f16", dict(b_hh=_t(H, dtype=torch.float16)), TypeError, "b_hh"),
    ("x_4d", dict(x=_t(1, T, B, I)), ValueError, "x"),
    ("h0_3d", dict(h0=_t(1, B, H)), ValueError, "h0"),  # nn.RNN's (layers, B, H) is not taken
    ("w_ih_3d", dict(w_ih=_t(1, H, I)), ValueError, "w_ih"),
    ("b_hh_2d", dict(b_hh=_t(H, 1)), ValueError, "b_hh"),
    ("h0_batch", dict(h0=_t(B - 1, H)), ValueError, "h0"),
    ("w_ih_shape", dict(w_ih=_t(H, I - 1)), ValueError, "w_ih"),
    ("w_hh_shape", dict(w_hh=_t(H, H + 1)), ValueError, "w_hh"),
    ("b_ih_len", dict(b_ih=_t(H + 2)), ValueError, "b_ih"),
    ("b_hh_len", dict(b_hh=_t(1)), ValueError, "b_hh"),
    ("empty_T", dict(x=_t(0, B, I)), ValueError, "x"),
    ("empty_B", dict(x=_t(T, 0, I), h0=_t(0, H)), ValueError, "x"),
    ("empty_H", dict(h0=_t(B, 0), w_ih=_t(0, I), w_hh=_t(0, 0), b_ih=None, b_hh=None), ValueError, "h0"),
    ("nonlinearity", dict(nonlinearity="sigmoid"), ValueError, "nonlinearity"),
]


def _call_rnn(entry, args):
    if entry == "public":
        return fusedseq.rnn(**args)
    return ops.rnn(args["x"], args["h0"], args["w_ih"], args["w_hh"], args["b_ih"], args["b_hh"],
                   args["nonlinearity"])


@pytest.mark.parametrize("entry", ["public", "raw"])
@pytest.mark.parametrize("case", RNN_BAD, ids=[c[0] for c in RNN_BAD])
def test_rnn_bad_input(case, entry):
    _, over, exc, name = case
    with pytest.raises(exc, match=_arg(name)) as info:
        _call_rnn(entry, rnn_args(**over))
    assert "fusedseq.rnn" in str(info.value)


def test_rnn_raw_op_takes_no_unbatched_x():
    with pytest.raises(ValueError, match=_arg("x")):
        ops.rnn(_t(T, I), _t(B, H), _t(H, I), _t(H, H), None, None, "tanh")


def test_rnn_batch_first_checks_the_batch_dim():
    # batch_first: x is (B, T, I), so h0 must have B = 3 rows, not T = 6
    with pytest.raises(ValueError, match=_arg("h0")):
        fusedseq.rnn(**rnn_args(x=_t(B, T, I), h0=_t(T, H)), batch_first=True)


def test_rnn_unbatched_with_batched_h0():
    with pytest.raises(ValueError, match=_arg("h0")):
        fusedseq.rnn(**rnn_args(x=_t(T, I)))


RNN_BWD_BAD = [
    ("grad_output_shape", dict(grad_output=_t(T, B, H + 1)), ValueError, "grad_output"),
    ("grad_output_T", dict(grad_output=_t(T - 1, B, H)), ValueError, "grad_output"),
    ("grad_output_dtype", dict(grad_output=_t(T, B, H, dtype=F64)), TypeError, "grad_output"),
    ("grad_h_n_shape", dict(grad_h_n=_t(B + 1, H)), ValueError, "grad_h_n"),
    ("grad_h_n_rank", dict(grad_h_n=_t(1, B, H)), ValueError, "grad_h_n"),
    ("output_shape", dict(output=_t(T, B, H - 1)), ValueError, "output"),
    ("output_int", dict(output=_int(T, B, H)), TypeError, "output"),
    ("h0_dtype", dict(h0=_t(B, H, dtype=F64)), TypeError, "h0"),
    ("w_ih_shape", dict(w_ih=_t(H + 1, I)), ValueError, "w_ih"),
    ("w_hh_shape", dict(w_hh=_t(H, 2)), ValueError, "w_hh"),
    ("nonlinearity", dict(nonlinearity="softplus"), ValueError, "nonlinearity"),
    ("empty_T", dict(x=_t(0, B, I), grad_output=_t(0, B, H), output=_t(0, B, H)), ValueError, "x"),
]


@pytest.mark.parametrize("case", RNN_BWD_BAD, ids=[c[0] for c in RNN_BWD_BAD])
def test_rnn_backward_bad_input(case):
    _, over, exc, name = case
    a = dict(grad_output=_t(T, B, H), grad_h_n=_t(B, H), output=_t(T, B, H), x=_t(T, B, I), h0=_t(B, H),
             w_ih=_t(H, I), w_hh=_t(H, H), nonlinearity="tanh")
    a.update(over)
    with pytest.raises(exc, match=_arg(name)):
        ops.rnn_backward(a["grad_output"], a["grad_h_n"], a["output"], a["x"], a["h0"], a["w_ih"], a["w_hh"],
                         a["nonlinearity"])


# --------------------------------------------------------------- attention --
NQ, NK, HQ, HKV, D = 7, 9, 4, 2, 8


def attn_args(**over):
    args = dict(q=_t(B, HQ, NQ, D), k=_t(B, HKV, NK, D), v=_t(B, HKV, NK, D), attn_mask=None, dropout_p=0.0,
                is_causal=False, scale=0.5)
    args.update(over)
    return args


def _bool(*shape):
    return torch.ones(*shape, dtype=torch.bool)


ATTN_BAD = [
    ("q_int", dict(q=_int(B, HQ, NQ, D)), TypeError, "q"),
    ("k_int", dict(k=_int(B, HKV, NK, D)), TypeError, "k"),
    ("v_int", dict(v=_int(B, HKV, NK, D)), TypeError, "v"),
    ("k_f64", dict(k=_t(B, HKV, NK, D, dtype=F64)), TypeError, "k"),
    ("v_bf16", dict(v=_t(B, HKV, NK, D, dtype=torch.bfloat16)), TypeError, "v"),
    ("k_batch", dict(k=_t(B + 1, HKV, NK, D)), ValueError, "k"),
    ("k_head_dim", dict(k=_t(B, HKV, NK, D + 1)), ValueError, "k"),
    ("v_Nk", dict(v=_t(B, HKV, NK + 1, D)), ValueError, "v"),
    ("v_heads", dict(v=_t(B, HKV * 2, NK, D)), ValueError, "v"),
    ("v_head_dim", dict(v=_t(B, HKV, NK, D * 2)), ValueError, "v"),
    ("heads_not_multiple", dict(k=_t(B, 3, NK, D), v=_t(B, 3, NK, D)), ValueError, "dim 1 of 'k'"),
    ("more_kv_heads_than_q", dict(q=_t(B, 2, NQ, D), k=_t(B, 4, NK, D), v=_t(B, 4, NK, D)), ValueError,
     "dim 1 of 'k'"),
    ("empty_Nq", dict(q=_t(B, HQ, 0, D)), ValueError, "q"),
    ("empty_Nk", dict(k=_t(B, HKV, 0, D), v=_t(B, HKV, 0, D)), ValueError, "k"),
    ("empty_D", dict(q=_t(B, HQ, NQ, 0), k=_t(B, HKV, NK, 0), v=_t(B, HKV, NK, 0)), ValueError, "q"),
    ("empty_B", dict(q=_t(0, HQ, NQ, D), k=_t(0, HKV, NK, D), v=_t(0, HKV, NK, D)), ValueError, "q"),
    # Hkv = 0 would be a division by zero in the head-group check: must be caught first.
    ("zero_kv_heads", dict(k=_t(B, 0, NK, D), v=_t(B, 0, NK, D)), ValueError, "k"),
    ("scale_nan", dict(scale=math.nan), ValueError, "scale"),
    ("scale_inf", dict(scale=math.inf), ValueError, "scale"),
    ("scale_neg_inf", dict(scale=-math.inf), ValueError, "scale"),
    # masks: shape (must broadcast to (B, Hq, Nq, Nk)), dtype, rank
    ("mask_Nk", dict(attn_mask=_bool(NQ, NK + 1)), ValueError, "attn_mask"),
    ("mask_transposed", dict(attn_mask=_bool(NK, NQ)), ValueError, "attn_mask"),
    ("mask_heads", dict(attn_mask=_bool(B, HKV, NQ, NK)), ValueError, "attn_mask"),
    ("mask_batch", dict(attn_mask=_bool(B + 1, 1, 1, NK)), ValueError, "attn_mask"),
    ("mask_5d", dict(attn_mask=_bool(1, B, HQ, NQ, NK)), ValueError, "attn_mask"),
    ("mask_int", dict(attn_mask=_int(NQ, NK)), TypeError, "attn_mask"),
    ("mask_f64_for_f32", dict(attn_mask=_t(NQ, NK, dtype=F64)), TypeError, "attn_mask"),
    ("mask_f16_for_f32", dict(attn_mask=_t(NQ, NK, dtype=torch.float16)), TypeError, "attn_mask"),
    ("mask_sparse", dict(attn_mask=_t(NQ, NK).to_sparse()), TypeError, "attn_mask"),
    # dropout
    ("dropout_one", dict(dropout_p=1.0), ValueError, "dropout_p"),
    ("dropout_negative", dict(dropout_p=-0.1), ValueError, "dropout_p"),
    ("dropout_nan", dict(dropout_p=math.nan), ValueError, "dropout_p"),
    # windows
    ("window_left", dict(window=(-2, 3)), ValueError, "window"),
    ("window_right", dict(window=(0, -5)), ValueError, "window"),
]


def _call_attn(entry, args):
    if entry == "public":
        return fusedseq.attention(**args)
    wl, wr = args.get("window") or (-1, -1)
    return ops.attention_fwd(args["q"], args["k"], args["v"], args["attn_mask"], args["dropout_p"],
                             args["is_causal"], args["scale"], wl, wr, 0, 0)


@pytest.mark.parametrize("entry", ["public", "raw"])
@pytest.mark.parametrize("case", ATTN_BAD, ids=[c[0] for c in ATTN_BAD])
def test_attention_bad_input(case, entry):
    _, over, exc, name = case
    with pytest.raises(exc, match=_arg(name)) as info:
        _call_attn(entry, attn_args(**over))
    assert "fusedseq.attention" in str(info.value)


def test_attention_mask_message_names_the_target_shape():
    with pytest.raises(ValueError) as info:
        fusedseq.attention(**attn_args(attn_mask=_bool(NQ, NK + 1)))
    msg = str(info.value)
    assert f"({B}, {HQ}, {NQ}, {NK})" in msg and f"({NQ}, {NK + 1})" in msg, msg


def test_attention_mask_and_is_causal_are_exclusive():
    """As SDPA documents (its math path raises; fold the causal mask in)."""
    with pytest.raises(ValueError, match="'attn_mask' and 'is_causal'"):
        fusedseq.attention(**attn_args(attn_mask=_bool(NQ, NK), is_causal=True))


def test_attention_gqa_needs_enable_gqa():
    with pytest.raises(ValueError, match=_arg("enable_gqa")):
        fusedseq.attention(**attn_args(), enable_gqa=False)


def test_attention_heads_message_names_both_counts():
    with pytest.raises(ValueError, match=r"multiple") as info:
        fusedseq.attention(**attn_args(k=_t(B, 3, NK, D), v=_t(B, 3, NK, D)))
    msg = str(info.value)
    assert "'q'" in msg and "'k'" in msg and str(HQ) in msg and "3" in msg, msg


# Rank problems: the public function's own check (mixed 3-D / 4-D) or the op's.
ATTN_RANK_BAD = [
    ("q3d_k4d", dict(q=_t(HQ, NQ, D)), "'q', 'k' and 'v' must have the same number of dims"),
    ("q4d_v3d", dict(v=_t(HKV, NK, D)), "'q', 'k' and 'v' must have the same number of dims"),
    ("q5d", dict(q=_t(1, B, HQ, NQ, D), k=_t(1, B, HKV, NK, D), v=_t(1, B, HKV, NK, D)), "q"),
    ("all_2d", dict(q=_t(NQ, D), k=_t(NK, D), v=_t(NK, D)), "q"),
]


@pytest.mark.parametrize("case", ATTN_RANK_BAD, ids=[c[0] for c in ATTN_RANK_BAD])
def test_attention_bad_rank_public(case):
    _, over, name = case
    with pytest.raises(ValueError, match=_arg(name)):
        fusedseq.attention(**attn_args(**over))


@pytest.mark.parametrize("name", ["q", "k", "v"])
def test_attention_bad_rank_raw(name):
    args = attn_args()
    args[name] = args[name][0]  # 3-D: the raw op takes 4-D only
    with pytest.raises(ValueError, match=_arg(name)):
        _call_attn("raw", args)


def test_attention_unbatched_heads_checked():
    with pytest.raises(ValueError, match="multiple"):
        fusedseq.attention(_t(HQ, NQ, D), _t(3, NK, D), _t(3, NK, D))


def _bwd_args(**over):
    q, k, v = _t(B, HQ, NQ, D), _t(B, HKV, NK, D), _t(B, HKV, NK, D)
    out, lse, lse_lo = ops.attention_fwd(q, k, v, None, 0.0, False, 0.5, -1, -1, 0, 0)
    a = dict(grad_out=_t(B, HQ, NQ, D), q=q, k=k, v=v, out=out, lse=lse, lse_lo=lse_lo, attn_mask=None,
             dropout_p=0.0, is_causal=False, scale=0.5)
    a.update(over)
    return a


ATTN_BWD_BAD = [
    ("grad_out_shape", dict(grad_out=_t(B, HQ, NQ + 1, D)), ValueError, "grad_out"),
    ("grad_out_dtype", dict(grad_out=_t(B, HQ, NQ, D, dtype=F64)), TypeError, "grad_out"),
    ("grad_out_rank", dict(grad_out=_t(HQ, NQ, D)), ValueError, "grad_out"),
    ("out_shape", dict(out=_t(B, HQ, NQ, D - 1)), ValueError, "out"),
    ("out_dtype", dict(out=_t(B, HQ, NQ, D, dtype=torch.float16)), TypeError, "out"),
    ("lse_shape", dict(lse=_t(B, HQ, NQ + 1)), ValueError, "lse"),
    ("lse_rank", dict(lse=_t(B, HQ, NQ, 1)), ValueError, "lse"),
    ("lse_dtype", dict(lse=_t(B, HQ, NQ, dtype=F64)), TypeError, "lse"),
    ("lse_int", dict(lse=_int(B, HQ, NQ)), TypeError, "lse"),
    ("lse_lo_shape", dict(lse_lo=_t(B, HQ + 1, NQ)), ValueError, "lse_lo"),
    ("lse_lo_dtype", dict(lse_lo=_t(B, HQ, NQ, dtype=torch.bfloat16)), TypeError, "lse_lo"),
    ("k_shape", dict(k=_t(B, HKV, NK, D + 1)), ValueError, "k"),
    ("v_dtype", dict(v=_t(B, HKV, NK, D, dtype=F64)), TypeError, "v"),
    ("heads_not_multiple", dict(k=_t(B, 3, NK, D), v=_t(B, 3, NK, D)), ValueError, "dim 1 of 'k'"),
    ("scale_nan", dict(scale=math.nan), ValueError, "scale"),
    ("mask_shape", dict(attn_mask=_bool(NQ + 1, NK)), ValueError, "attn_mask"),
    ("dropout", dict(dropout_p=1.5), ValueError, "dropout_p"),
]


@pytest.mark.parametrize("case", ATTN_BWD_BAD, ids=[c[0] for c in ATTN_BWD_BAD])
def test_attention_bwd_bad_input(case):
    _, over, exc, name = case
    a = _bwd_args(**over)
    with pytest.raises(exc, match=_arg(name)):
        ops.attention_bwd(a["grad_out"], a["q"], a["k"], a["v"], a["out"], a["lse"], a["lse_lo"], a["attn_mask"],
                          a["dropout_p"], a["is_causal"], a["scale"], -1, -1, 0, 0)


def test_attention_bwd_lse_of_bf16_inputs_is_float32():
    """The forward returns a float32 lse for bf16 inputs; the backward insists on it."""
    q, k, v = (t.to(torch.bfloat16) for t in (_t(B, HQ, NQ, D), _t(B, HKV, NK, D), _t(B, HKV, NK, D)))
    out, lse, lse_lo = ops.attention_fwd(q, k, v, None, 0.0, True, 0.5, -1, -1, 0, 0)
    assert lse.dtype == lse_lo.dtype == torch.float32
    ops.attention_bwd(out, q, k, v, out, lse, lse_lo, None, 0.0, True, 0.5, -1, -1, 0, 0)  # accepted as returned
    with pytest.raises(TypeError, match=_arg("lse")):
        ops.attention_bwd(out, q, k, v, out, lse.to(torch.bfloat16), lse_lo, None, 0.0, True, 0.5, -1, -1, 0, 0)


# ------------------------------------------------------------------ varlen --
TQ, TK = 10, 12


def _cu(*vals):
    return torch.tensor(vals, dtype=torch.int32)


def varlen_args(**over):
    args = dict(q=_t(TQ, HQ, D), k=_t(TK, HKV, D), v=_t(TK, HKV, D), cu_seqlens_q=_cu(0, 4, 10),
                cu_seqlens_k=_cu(0, 5, 12), max_seqlen_q=6, max_seqlen_k=7)
    args.update(over)
    return args


VARLEN_BAD = [
    ("q_4d", dict(q=_t(1, TQ, HQ, D)), ValueError, "q"),
    ("k_dtype", dict(k=_t(TK, HKV, D, dtype=F64)), TypeError, "k"),
    ("v_total", dict(v=_t(TK + 1, HKV, D)), ValueError, "v"),
    ("heads", dict(k=_t(TK, 3, D), v=_t(TK, 3, D)), ValueError, "dim 1 of 'k'"),
    ("cu_q_decreasing", dict(cu_seqlens_q=_cu(0, 7, 4, 10), cu_seqlens_k=_cu(0, 2, 5, 12)), ValueError,
     "cu_seqlens_q"),
    ("cu_k_decreasing", dict(cu_seqlens_k=_cu(0, 9, 12)[[0, 2, 1]]), ValueError, "cu_seqlens_k"),
    ("cu_q_not_from_0", dict(cu_seqlens_q=_cu(1, 4, 10)), ValueError, "cu_seqlens_q"),
    ("cu_q_wrong_total", dict(cu_seqlens_q=_cu(0, 4, 9)), ValueError, "cu_seqlens_q"),
    ("cu_k_wrong_total", dict(cu_seqlens_k=_cu(0, 5, 13)), ValueError, "cu_seqlens_k"),
    ("cu_int64", dict(cu_seqlens_q=torch.tensor([0, 4, 10])), TypeError, "cu_seqlens_q"),
    ("cu_2d", dict(cu_seqlens_k=_cu(0, 5, 12)[None]), ValueError, "cu_seqlens_k"),
    ("cu_lengths_differ", dict(cu_seqlens_k=_cu(0, 2, 5, 12)), ValueError, "cu_seqlens_k"),
    ("max_q_too_small", dict(max_seqlen_q=5), ValueError, "max_seqlen_q"),
    ("max_k_too_small", dict(max_seqlen_k=6), ValueError, "max_seqlen_k"),
    ("dropout", dict(dropout_p=1.0), ValueError, "dropout_p"),
    ("window", dict(window_size=(3, -2)), ValueError, "window"),
]


@pytest.mark.parametrize("case", VARLEN_BAD, ids=[c[0] for c in VARLEN_BAD])
def test_attention_varlen_bad_input(case):
    _, over, exc, name = case
    with pytest.raises(exc, match=_arg(name)) as info:
        fusedseq.attention_varlen(**varlen_args(**over))
    assert "fusedseq.attention_varlen" in str(info.value)


# ---------------------------------------------- argument kinds, every op --
# A wrong *kind* of argument (None, a list, a NumPy array or a float where a
# tensor goes; anything but a bool for a flag) is a TypeError naming the
# argument, from every public function, before torch sees it.
NOT_TENSORS = [None, [1.0, 2.0], 1.5, "q", np.ones((2, 2), dtype=np.float32)]
NOT_BOOLS = ["False", None, 1, 0.0, [True]]


def _public_calls():
    """(op, call with arguments replaced, its tensor arguments, its flag arguments)."""
    return [
        ("rnn_cell", lambda **o: fusedseq.rnn_cell(**{**cell_args(), **o}), ["x", "w_ih", "w_hh"], []),
        ("rnn", lambda **o: fusedseq.rnn(**{**rnn_args(), **o}), ["x", "w_ih", "w_hh"], ["batch_first"]),
        ("attention", lambda **o: fusedseq.attention(**{**attn_args(), **o}), ["q", "k", "v"],
         ["is_causal", "enable_gqa"]),
        ("attention_with_lse", lambda **o: fusedseq.attention_with_lse(**{**attn_args(), **o}), ["q", "k", "v"],
         ["is_causal"]),
        ("attention_varlen", lambda **o: fusedseq.attention_varlen(**{**varlen_args(), **o}),
         ["q", "k", "v", "cu_seqlens_q", "cu_seqlens_k"], ["causal", "return_lse"]),
    ]


PUBLIC_CALLS = _public_calls()


@pytest.mark.parametrize("op,call,tensors,flags", PUBLIC_CALLS, ids=[c[0] for c in PUBLIC_CALLS])
def test_non_tensor_arguments_are_type_errors(op, call, tensors, flags):
    for name in tensors:
        for bad in NOT_TENSORS:
            with pytest.raises(TypeError, match=_arg(name)) as info:
                call(**{name: bad})
            assert f"fusedseq.{op}" in str(info.value)


@pytest.mark.parametrize("op,call,tensors,flags", [c for c in PUBLIC_CALLS if c[3]],
                         ids=[c[0] for c in PUBLIC_CALLS if c[3]])
def test_non_bool_flags_are_type_errors(op, call, tensors, flags):
    for name in flags:
        for bad in NOT_BOOLS:
            with pytest.raises(TypeError, match=_arg(name)):
                call(**{name: bad})


@pytest.mark.parametrize("bad", ["False", 1, 0.0])
def test_attention_causal_alias_takes_bools_only(bad):
    """(None means "not given" for the alias, which defaults to is_causal.)"""
    with pytest.raises(TypeError, match=_arg("causal")):
        fusedseq.attention(**attn_args(), causal=bad)


@pytest.mark.parametrize("name,bad", [("dropout_p", "0.1"), ("dropout_p", None), ("scale", "big"),
                                      ("scale", torch.tensor(0.5)), ("window", 3), ("window", (1.5, 2)),
                                      ("window", (1, 2, 3)), ("attn_mask", [[True]]), ("attn_mask", True)])
def test_attention_scalar_arguments_are_type_errors(name, bad):
    with pytest.raises(TypeError, match=_arg(name)):
        fusedseq.attention(**attn_args(**{name: bad}))


@pytest.mark.parametrize("name,bad", [("max_seqlen_q", 6.0), ("max_seqlen_k", None), ("softmax_scale", "x"),
                                      ("dropout_p", None)])
def test_attention_varlen_scalar_arguments_are_type_errors(name, bad):
    with pytest.raises(TypeError, match=_arg(name)):
        fusedseq.attention_varlen(**varlen_args(**{name: bad}))


def test_rnn_string_arguments_are_type_errors():
    with pytest.raises(TypeError, match=_arg("nonlinearity")):
        fusedseq.rnn_cell(**cell_args(nonlinearity=None))
    with pytest.raises(TypeError, match=_arg("nonlinearity")):
        fusedseq.rnn(**rnn_args(nonlinearity=1))


# ------------------------------------------------------- layouts, devices --
def _sparse_cases():
    return [
        ("rnn_cell", lambda: fusedseq.rnn_cell(**cell_args(w_ih=_t(H, I).to_sparse())), "w_ih"),
        ("rnn", lambda: fusedseq.rnn(**rnn_args(h0=_t(B, H).to_sparse())), "h0"),
        ("attention", lambda: fusedseq.attention(**attn_args(k=_t(B, HKV, NK, D).to_sparse())), "k"),
    ]


@pytest.mark.parametrize("case", _sparse_cases(), ids=lambda c: c[0] if isinstance(c, tuple) else None)
def test_sparse_layout_is_a_type_error_naming_the_argument(case):
    _, call, name = case
    with pytest.raises(TypeError, match=_arg(name)):
        call()


needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device available")


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("entry", ["public", "raw"])
def test_mixed_devices_rejected(entry):
    with pytest.raises(TypeError, match=_arg("h")):
        _call_cell(entry, cell_args(h=_t(B, H).cuda()))
    with pytest.raises(TypeError, match=_arg("k")):
        _call_attn(entry, attn_args(k=_t(B, HKV, NK, D).cuda()))
    with pytest.raises(TypeError, match=_arg("w_hh")):
        _call_rnn(entry, rnn_args(w_hh=_t(H, H).cuda()))


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("op,call", [
    ("rnn_cell", lambda: fusedseq.rnn_cell(**{k: (v.cuda() if isinstance(v, torch.Tensor) else v)
                                             for k, v in cell_args().items()})),
    ("rnn", lambda: fusedseq.rnn(**{k: (v.cuda() if isinstance(v, torch.Tensor) else v)
                                   for k, v in rnn_args().items()})),
    ("attention_fwd", lambda: fusedseq.attention(**{k: (v.cuda() if isinstance(v, torch.Tensor) else v)
                                                    for k, v in attn_args().items()})),
])
def test_cuda_without_kernel_is_not_implemented(op, call):
    """Until an op has a CUDA kernel, CUDA tensors get a clear NotImplementedError."""
    if cuda_skip_reason([op]) is None:
        pytest.skip(f"{op} has a CUDA kernel in this build")
    with pytest.raises(NotImplementedError, match="no CUDA kernel"):
        call()
