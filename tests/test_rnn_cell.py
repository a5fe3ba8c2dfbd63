"""fusedseq.rnn_cell and torch.ops.fusedseq.rnn_cell{,_backward}."""
from __future__ import annotations

import math

import pytest
import torch

import fusedseq
from fusedseq import reference

from conftest import (DTYPE_IDS, FP32_RTOL, assert_accurate, check_against_reference, dtype_params, fwd_bwd,
                      nbytes, poison_heap, rel_err, rnn_weights, torch_rnn_cell, with_views)

ops = torch.ops.fusedseq
# The CUDA and emulated variants of every test here need these ops' CUDA kernels.
pytestmark = pytest.mark.ops("rnn_cell", "rnn_cell_backward")

# (id, B, I, H, (b_ih?, b_hh?), h given?, layout). B=None: unbatched (x (I,), h (H,)).
# "noncontig": x is a transposed (I, B) view, w_ih a transposed (I, H) view and
# h every other column of a (B, 2H) tensor, so no input reaches the op contiguous.
CASES = [
    ("B1_I1_H1", 1, 1, 1, (True, True), True, "contig"),
    ("B1_nobias_h0", 1, 7, 5, (False, False), False, "contig"),
    ("small_noncontig", 4, 16, 32, (True, True), True, "noncontig"),
    ("odd_bih_only", 3, 33, 17, (True, False), True, "contig"),
    ("bhh_only_h0_noncontig", 5, 8, 12, (False, True), False, "noncontig"),
    ("wide", 16, 130, 257, (True, True), True, "contig"),
    ("rows_padded", 5, 8, 12, (True, True), True, "rows_padded"),
    ("unbatched", None, 9, 6, (True, True), True, "contig"),
    ("unbatched_h0", None, 9, 6, (False, False), False, "contig"),
]


def cell_case(make, B, I, H, bias, h_given, layout):
    """Float64 inputs (rounded to the test dtype by the caller) and the views
    applied before the call."""
    w_ih, w_hh, b_ih, b_hh = rnn_weights(make, I, H, bias=bias)
    views = {}
    if B is None:
        x, h = make(I), (make(H) if h_given else None)
    elif layout == "noncontig":
        x, h = make(I, B), (make(B, 2 * H) if h_given else None)
        w_ih = w_ih.T.contiguous()
        views = {"x": lambda t: t.T, "w_ih": lambda t: t.T, "h": lambda t: t[:, ::2]}
    elif layout == "rows_padded":
        # Views whose rows are further apart than their width: the kernel
        # reads them in place through the params' row strides.
        x, h = make(B, I + 3), make(B, H + 5)
        w_ih, w_hh = torch.cat([w_ih, make(H, 2)], 1), torch.cat([w_hh, make(H, 7)], 1)
        views = {"x": lambda t: t[:, :I], "h": lambda t: t[:, :H], "w_ih": lambda t: t[:, :I],
                 "w_hh": lambda t: t[:, :H]}
    else:
        x, h = make(B, I), (make(B, H) if h_given else None)
    inputs = dict(x=x, h=h, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh)
    return inputs, views


@pytest.mark.ops("rnn_cell", "rnn_cell_backward")
@pytest.mark.parametrize("dtype", dtype_params())
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_rnn_cell_forward_backward(case, nonlinearity, dtype, device, make):
    _, B, I, H, bias, h_given, layout = case
    inputs, views = cell_case(make, B, I, H, bias, h_given, layout)
    if layout in ("noncontig", "rows_padded"):
        for name in ("x", "w_ih", "h"):
            if inputs[name] is not None:
                assert not views[name](inputs[name]).is_contiguous()
    outs, grads = check_against_reference(
        with_views(fusedseq.rnn_cell, views, nonlinearity=nonlinearity),
        with_views(reference.rnn_cell, views, nonlinearity=nonlinearity),
        inputs, dtype, make, device=device,
        baseline=with_views(torch_rnn_cell, views, nonlinearity=nonlinearity))
    expected_shape = (H,) if B is None else (B, H)
    assert outs[0].shape == expected_shape
    # Gradients come back in the inputs' dtype and shape, one per given input.
    given = {n for n, t in inputs.items() if t is not None}
    assert set(grads) == given
    for n, g in grads.items():
        assert g.dtype == dtype and g.shape == inputs[n].shape


@pytest.mark.parametrize("dtype", dtype_params([torch.float32, torch.float64]))
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batched,h_given", [(True, True), (True, False), (False, True)])
def test_matches_nn_rnncell(batched, h_given, bias, nonlinearity, dtype, device, make):
    torch.manual_seed(1234)
    cell = torch.nn.RNNCell(10, 20, bias=bias, nonlinearity=nonlinearity).to(device, dtype)
    x = make(6, 10, dtype=dtype) if batched else make(10, dtype=dtype)
    h = (make(6, 20, dtype=dtype) if batched else make(20, dtype=dtype)) if h_given else None
    xt, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    ht, h_ref = (None, None) if h is None else (h.clone().requires_grad_(), h.clone().requires_grad_())
    expected = cell(x_ref, h_ref)
    got = fusedseq.rnn_cell(xt, ht, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh, nonlinearity)
    g = make(*expected.shape, dtype=dtype)
    params = list(cell.parameters())
    ours = torch.autograd.grad(got, [xt] + ([ht] if h_given else []) + params, g)
    theirs = torch.autograd.grad(expected, [x_ref] + ([h_ref] if h_given else []) + params, g)
    tol = FP32_RTOL if dtype == torch.float32 else 1e-12
    assert got.shape == expected.shape
    assert rel_err(got, expected) <= tol
    for a, b in zip(ours, theirs):
        assert rel_err(a, b) <= tol


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("h_given", [True, False])
def test_gradcheck(nonlinearity, h_given, device, make):
    kw = dict(dtype=torch.float64, requires_grad=True)
    x, h = make(3, 4, **kw), (make(3, 5, **kw) if h_given else None)
    w_ih, w_hh, b_ih, b_hh = make(5, 4, **kw), make(5, 5, **kw), make(5, **kw), make(5, **kw)
    assert torch.autograd.gradcheck(
        lambda x, h, w_ih, w_hh, b_ih, b_hh: fusedseq.rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity),
        (x, h, w_ih, w_hh, b_ih, b_hh))


def test_gradcheck_unbatched_no_bias(device, make):
    kw = dict(dtype=torch.float64, requires_grad=True)
    args = (make(4, **kw), make(3, **kw), make(3, 4, **kw), make(3, 3, **kw))
    assert torch.autograd.gradcheck(lambda *a: fusedseq.rnn_cell(*a, nonlinearity="tanh"), args)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_partial_requires_grad(nonlinearity, device, make):
    """Only the weights need gradients (the usual training case)."""
    x, h = make(4, 6), make(4, 8)
    w_ih, w_hh, b_ih, b_hh = (t.float() for t in rnn_weights(make, 6, 8, dtype=torch.float64))
    w_ih.requires_grad_(), w_hh.requires_grad_()
    out = fusedseq.rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity)
    g = make(4, 8)
    gw = torch.autograd.grad(out, [w_ih, w_hh], g)
    _, ref = fwd_bwd(lambda **kw: reference.rnn_cell(**kw, nonlinearity=nonlinearity),
                     dict(x=x, h=h, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh), [g],
                     grad_of=["w_ih", "w_hh"], dtype=torch.float64)
    assert rel_err(gw[0], ref["w_ih"]) <= FP32_RTOL
    assert rel_err(gw[1], ref["w_hh"]) <= FP32_RTOL


def test_inference_mode(device, make):
    x, h = make(3, 4), make(3, 5)
    ws = [t.float() for t in rnn_weights(make, 4, 5)]
    with torch.inference_mode():
        out = fusedseq.rnn_cell(x, h, *ws)
    assert rel_err(out, reference.rnn_cell(x.double(), h.double(), *(w.double() for w in ws))) <= FP32_RTOL


# ------------------------------------------------------------------ raw ops --
OPCHECK_SAMPLES = [
    ("fp32_bias", torch.float32, 4, 6, 8, (True, True), "tanh", False),
    ("fp64_nobias_relu_noncontig", torch.float64, 3, 5, 7, (False, False), "relu", True),
    ("bf16_bih", torch.bfloat16, 2, 16, 16, (True, False), "tanh", False),
    ("fp16_bhh_relu", torch.float16, 1, 3, 2, (False, True), "relu", False),
]


def _raw_sample(make, dtype, B, I, H, bias, noncontig, requires_grad=True):
    w_ih, w_hh, b_ih, b_hh = (None if t is None else t.to(dtype).requires_grad_(requires_grad)
                              for t in rnn_weights(make, I, H, bias=bias))
    if noncontig:
        x = make(I, B, dtype=dtype, requires_grad=requires_grad).T
        h = make(H, B, dtype=dtype, requires_grad=requires_grad).T
    else:
        x, h = make(B, I, dtype=dtype, requires_grad=requires_grad), make(B, H, dtype=dtype,
                                                                          requires_grad=requires_grad)
    return x, h, w_ih, w_hh, b_ih, b_hh


@pytest.mark.parametrize("sample", OPCHECK_SAMPLES, ids=[s[0] for s in OPCHECK_SAMPLES])
def test_opcheck_rnn_cell(sample, device, make):
    _, dtype, B, I, H, bias, nl, noncontig = sample
    args = _raw_sample(make, dtype, B, I, H, bias, noncontig)
    torch.library.opcheck(ops.rnn_cell.default, (*args, nl))


@pytest.mark.parametrize("sample", OPCHECK_SAMPLES, ids=[s[0] for s in OPCHECK_SAMPLES])
def test_opcheck_rnn_cell_backward(sample, device, make):
    _, dtype, B, I, H, bias, nl, noncontig = sample
    x, h, w_ih, w_hh, b_ih, b_hh = _raw_sample(make, dtype, B, I, H, bias, noncontig, requires_grad=False)
    h_next = ops.rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh, nl)
    torch.library.opcheck(ops.rnn_cell_backward.default, (make(B, H, dtype=dtype), h_next, x, h, w_ih, w_hh, nl))


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_raw_backward_op_matches_autograd_of_reference(nonlinearity, device, make):
    """The backward op on its own: grad_b is the gradient of either bias."""
    x, h = make(5, 7, dtype=torch.float64), make(5, 9, dtype=torch.float64)
    w_ih, w_hh, b_ih, b_hh = rnn_weights(make, 7, 9)
    g = make(5, 9, dtype=torch.float64)
    h_next = ops.rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity)
    got = ops.rnn_cell_backward(g, h_next, x, h, w_ih, w_hh, nonlinearity)
    _, ref = fwd_bwd(lambda **kw: reference.rnn_cell(**kw, nonlinearity=nonlinearity),
                     dict(x=x, h=h, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh), [g])
    for got_t, name in zip(got, ["x", "h", "w_ih", "w_hh", "b_ih"]):
        assert rel_err(got_t, ref[name]) <= 1e-12, name
    assert rel_err(got[4], ref["b_hh"]) <= 1e-12


def test_compile_fullgraph(device, make):
    torch._dynamo.reset()

    def f(x, h, w_ih, w_hh, b_ih, b_hh):
        return fusedseq.rnn_cell(x * 2.0, h, w_ih, w_hh, b_ih, b_hh, "tanh").sin()

    args = [t.float().requires_grad_() for t in (make(4, 6, dtype=torch.float64), make(4, 8, dtype=torch.float64),
                                                 *rnn_weights(make, 6, 8))]
    g = make(4, 8)
    compiled = torch.compile(f, fullgraph=True)
    out_c = compiled(*args)
    grads_c = torch.autograd.grad(out_c, args, g)
    out_e = f(*args)
    grads_e = torch.autograd.grad(out_e, args, g)
    assert rel_err(out_c, out_e) <= 1e-6
    for a, b in zip(grads_c, grads_e):
        assert rel_err(a, b) <= 1e-6
    torch._dynamo.reset()


# ------------------------------------------------------- values and memory --
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("bad", ["nan_x", "inf_x", "nan_h", "neg_inf_h"])
def test_non_finite_propagates_like_reference(bad, nonlinearity, device, make):
    x, h = make(4, 6), make(4, 5)
    w_ih, w_hh, b_ih, b_hh = (t.float() for t in rnn_weights(make, 6, 5))
    value = {"nan": math.nan, "inf": math.inf, "neg": -math.inf}[bad.split("_")[0]]
    (x if bad.endswith("_x") else h)[1, 2] = value
    out = fusedseq.rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity)
    ref = reference.rnn_cell(*(t.double() for t in (x, h, w_ih, w_hh, b_ih, b_hh)), nonlinearity)
    # Row 1 is whatever IEEE arithmetic makes of it, exactly as the reference;
    # the other rows never see the bad value.
    torch.testing.assert_close(out[1], ref[1].float(), equal_nan=True, rtol=1e-5, atol=1e-6)
    if bad.startswith("nan"):
        assert out[1].isnan().all()
    rows = [0, 2, 3]
    assert torch.isfinite(out[rows]).all()
    assert rel_err(out[rows], ref[rows]) <= FP32_RTOL


@pytest.mark.parametrize("dtype", dtype_params())
def test_outputs_fully_written(dtype, device, make):
    """Outputs are freshly allocated; heap chunks of their sizes are filled
    with NaN bytes first, so any element a kernel forgets to write shows up."""
    B, I, H = 7, 37, 67
    x, h = make(B, I, dtype=dtype, requires_grad=True), make(B, H, dtype=dtype, requires_grad=True)
    ws = [t.to(dtype).requires_grad_() for t in rnn_weights(make, I, H)]
    g = make(B, H, dtype=dtype)
    sizes = [nbytes(s, d) for s in [(B, I), (B, H), (H, I), (H, H), (H,)] for d in (dtype, torch.float32)]
    poison_heap(*sizes)
    out = fusedseq.rnn_cell(x, h, *ws)
    poison_heap(*sizes)
    grads = torch.autograd.grad(out, [x, h, *ws], g)
    _, ref_grads = fwd_bwd(reference.rnn_cell, dict(x=x, h=h, w_ih=ws[0], w_hh=ws[1], b_ih=ws[2], b_hh=ws[3]),
                           [g], dtype=torch.float64)
    ref = reference.rnn_cell(*(t.double() for t in (x, h, *ws)))
    for t in (out, *grads):
        assert torch.isfinite(t).all()
    lowp_tol = 2e-2 if dtype in (torch.float16, torch.bfloat16) else None  # only catching garbage here
    tol = lowp_tol or (FP32_RTOL if dtype == torch.float32 else 1e-12)
    assert rel_err(out, ref) <= tol
    for got, name in zip(grads, ["x", "h", "w_ih", "w_hh", "b_ih"]):
        assert rel_err(got, ref_grads[name]) <= tol, name


@pytest.mark.parametrize("dtype", dtype_params([torch.float32, torch.bfloat16]))
def test_deterministic(dtype, device, make):
    x, h = make(9, 40, dtype=dtype, requires_grad=True), make(9, 70, dtype=dtype, requires_grad=True)
    ws = [t.to(dtype).requires_grad_() for t in rnn_weights(make, 40, 70)]
    g = make(9, 70, dtype=dtype)
    runs = []
    for _ in range(2):
        out = fusedseq.rnn_cell(x, h, *ws, nonlinearity="relu")
        runs.append((out, *torch.autograd.grad(out, [x, h, *ws], g)))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_thread_count_does_not_change_result(make):
    x, h = make(33, 50, dtype=torch.float64), make(33, 70, dtype=torch.float64)
    ws = rnn_weights(make, 50, 70)
    n = torch.get_num_threads()
    out_n = fusedseq.rnn_cell(x, h, *ws)
    try:
        torch.set_num_threads(1)
        out_1 = fusedseq.rnn_cell(x, h, *ws)
    finally:
        torch.set_num_threads(n)
    assert rel_err(out_n, out_1) <= 1e-14


@pytest.mark.parametrize("autocast_dtype", dtype_params([torch.bfloat16, torch.float16]))
def test_autocast(autocast_dtype, device, make):
    x, h = make(8, 24), make(8, 32)
    w_ih, w_hh, b_ih, b_hh = (t.float() for t in rnn_weights(make, 24, 32))
    with torch.autocast(torch.device(device).type, dtype=autocast_dtype):
        out = fusedseq.rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh)
    assert out.dtype == autocast_dtype
    rounded = [t.to(autocast_dtype) for t in (x, h, w_ih, w_hh, b_ih, b_hh)]
    ref = reference.rnn_cell(*(t.double() for t in rounded))
    assert_accurate(out, ref, autocast_dtype, baseline=torch_rnn_cell(*rounded))


def test_autocast_backward_gives_fp32_grads(device, make):
    x = make(4, 6, requires_grad=True)
    h = make(4, 5, requires_grad=True)
    ws = [t.float().requires_grad_() for t in rnn_weights(make, 6, 5)]
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
        out = fusedseq.rnn_cell(x, h, *ws)
    grads = torch.autograd.grad(out.float().sum(), [x, h, *ws])
    _, ref = fwd_bwd(reference.rnn_cell, dict(x=x, h=h, w_ih=ws[0], w_hh=ws[1], b_ih=ws[2], b_hh=ws[3]),
                     [torch.ones(4, 5, device=device)], dtype=torch.float64)
    for got, name in zip(grads, ["x", "h", "w_ih", "w_hh", "b_ih", "b_hh"]):
        assert got.dtype == torch.float32
        assert rel_err(got, ref[name]) <= 2e-2, name  # bf16 forward: only the plumbing is checked


def test_double_backward_is_refused(device, make):
    """Differentiating the gradient must raise, not silently return zeros
    (which would corrupt e.g. a gradient penalty)."""
    kw = dict(dtype=torch.float64, requires_grad=True)
    x, h, w_ih, w_hh = make(3, 4, **kw), make(3, 5, **kw), make(5, 4, **kw), make(5, 5, **kw)
    dx, = torch.autograd.grad(fusedseq.rnn_cell(x, h, w_ih, w_hh).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(dx.sum(), x)


# The kernels work on 16-column chunks with 8-wide vectors and go parallel
# above ~32k multiply-adds: widths around those edges, fp32 both ways.
@pytest.mark.parametrize("H", [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 65, 200])
@pytest.mark.parametrize("B", [1, 3, 70])
def test_width_sweep(B, H, device, make):
    I = H + 3
    w_ih, w_hh, b_ih, b_hh = rnn_weights(make, I, H)
    inputs = dict(x=make(B, I), h=make(B, H), w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh)
    check_against_reference(fusedseq.rnn_cell, reference.rnn_cell, inputs, torch.float32, make)


def test_compile_fullgraph_backward_op(device, make):
    """The backward op traced on its own (as a user's custom backward would)."""
    torch._dynamo.reset()
    x, h = make(4, 6), make(4, 8)
    w_ih, w_hh, b_ih, b_hh = (t.float() for t in rnn_weights(make, 6, 8))
    h_next = ops.rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh, "relu")
    g = make(4, 8)

    def f(g, h_next, x, h, w_ih, w_hh):
        return ops.rnn_cell_backward(g * 0.5, h_next, x, h, w_ih, w_hh, "relu")

    got = torch.compile(f, fullgraph=True)(g, h_next, x, h, w_ih, w_hh)
    expected = f(g, h_next, x, h, w_ih, w_hh)
    for a, b in zip(got, expected):
        assert rel_err(a, b) <= 1e-6
    torch._dynamo.reset()
