"""fusedseq.rnn and torch.ops.fusedseq.rnn{,_backward}: the whole recurrence."""
from __future__ import annotations

import math

import pytest
import torch

import fusedseq
from fusedseq import reference

from conftest import (FP32_RTOL, assert_accurate, assert_compiled_matches_eager, check_against_reference, dtype_params,
                      fwd_bwd, nbytes, poison_heap, rel_err, rnn_weights, torch_rnn, with_views)

ops = torch.ops.fusedseq
# The CUDA and emulated variants of every test here need these ops' CUDA kernels.
pytestmark = pytest.mark.ops("rnn", "rnn_backward")

# (id, T, B, I, H, (b_ih?, b_hh?), h0 given?, layout). B=None: unbatched.
# "batch_first": x is (B, T, I), which the op sees as a transposed (T, B, I) view.
# "noncontig": batch_first plus transposed views of both weights and every
# other column of a (B, 2H) h0. "expanded_x": the same input at every step,
# a (1, B, I) tensor expanded over T (stride 0, overlapping). "rows_padded": h0
# and both weights are views whose rows lie further apart than their width.
CASES = [
    ("T1_B1_I1_H1", 1, 1, 1, 1, (True, True), True, "contig"),
    ("T1_nobias_h0", 1, 3, 5, 4, (False, False), False, "contig"),
    ("B1_bih_only", 7, 1, 6, 9, (True, False), True, "contig"),
    ("batch_first", 5, 3, 8, 16, (True, True), True, "batch_first"),
    ("odd_bhh_only_h0", 17, 4, 33, 65, (False, True), False, "contig"),
    ("noncontig", 9, 5, 12, 20, (True, True), True, "noncontig"),
    ("rows_padded", 6, 3, 5, 18, (True, True), True, "rows_padded"),
    ("long", 60, 2, 16, 40, (True, True), True, "contig"),
    ("wide", 8, 16, 130, 257, (True, True), True, "batch_first"),
    pytest.param(("bench_shape", 200, 16, 256, 256, (True, True), True, "contig"),
                 marks=pytest.mark.skip_emulated("a CPU benchmark shape: about a minute per variant on the emulator; "
                                                "test_rnn_cuda.py covers T=40, B=8, H=256")),
    ("expanded_x", 10, 3, 6, 8, (True, True), True, "expanded_x"),
    ("unbatched", 6, None, 5, 7, (True, True), True, "contig"),
    ("unbatched_h0", 6, None, 5, 7, (False, False), False, "contig"),
]


def rnn_case(make, T, B, I, H, bias, h0_given, layout):
    w_ih, w_hh, b_ih, b_hh = rnn_weights(make, I, H, bias=bias)
    views, batch_first = {}, layout in ("batch_first", "noncontig")
    if B is None:
        x, h0 = make(T, I), (make(H) if h0_given else None)
    elif batch_first:
        x, h0 = make(B, T, I), (make(B, H) if h0_given else None)
    else:
        x, h0 = make(T, B, I), (make(B, H) if h0_given else None)
    if layout == "expanded_x":
        x = make(1, B, I)
        views = {"x": lambda t: t.expand(T, B, I)}
    if layout == "noncontig":
        w_ih, w_hh = w_ih.T.contiguous(), w_hh.T.contiguous()
        h0 = make(B, 2 * H) if h0_given else None
        views = {"w_ih": lambda t: t.T, "w_hh": lambda t: t.T, "h0": lambda t: t[:, ::2]}
    if layout == "rows_padded":
        w_ih, w_hh, h0 = torch.cat([w_ih, make(H, 3)], 1), torch.cat([w_hh, make(H, 4)], 1), make(B, H + 6)
        views = {"w_ih": lambda t: t[:, :I], "w_hh": lambda t: t[:, :H], "h0": lambda t: t[:, :H]}
    return dict(x=x, h0=h0, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh), views, batch_first


@pytest.mark.ops("rnn", "rnn_backward")
@pytest.mark.parametrize("dtype", dtype_params())
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0])
def test_rnn_forward_backward(case, nonlinearity, dtype, device, make):
    _, T, B, I, H, bias, h0_given, layout = case
    inputs, views, batch_first = rnn_case(make, T, B, I, H, bias, h0_given, layout)
    kw = dict(nonlinearity=nonlinearity, batch_first=batch_first)
    outs, grads = check_against_reference(
        with_views(fusedseq.rnn, views, **kw), with_views(reference.rnn, views, **kw), inputs, dtype, make,
        baseline=with_views(torch_rnn, views, **kw), device=device, out_names=("output", "h_n"))
    output, h_n = outs
    if B is None:
        assert output.shape == (T, H) and h_n.shape == (H,)
    else:
        assert output.shape == ((B, T, H) if batch_first else (T, B, H)) and h_n.shape == (B, H)
    # h_n is exactly the last step of output.
    assert torch.equal(h_n, output[:, -1] if batch_first else output[-1])
    assert set(grads) == {n for n, t in inputs.items() if t is not None}


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_partial_requires_grad(nonlinearity, device, make):
    """Only the weights need gradients, the usual training case; then only x."""
    T, B, I, H = 7, 3, 5, 6
    w_ih, w_hh, b_ih, b_hh = rnn_weights(make, I, H)
    inputs = dict(x=make(T, B, I, dtype=torch.float64), h0=make(B, H, dtype=torch.float64), w_ih=w_ih, w_hh=w_hh,
                  b_ih=b_ih, b_hh=b_hh)
    cots = [make(T, B, H, dtype=torch.float64), make(B, H, dtype=torch.float64)]
    fn = with_views(fusedseq.rnn, nonlinearity=nonlinearity)
    ref_fn = with_views(reference.rnn, nonlinearity=nonlinearity)
    for names in (["w_ih", "w_hh"], ["x"]):
        _, got = fwd_bwd(fn, inputs, cots, grad_of=names, dtype=torch.float32)
        _, ref = fwd_bwd(ref_fn, inputs, cots, grad_of=names)
        assert set(got) == set(names)
        for n in names:
            assert rel_err(got[n], ref[n]) <= FP32_RTOL, n


def test_inference_mode(device, make):
    x, h0 = make(5, 2, 3), make(2, 4)
    ws = [t.float() for t in rnn_weights(make, 3, 4)]
    with torch.inference_mode():
        out, h_n = fusedseq.rnn(x, h0, *ws)
    ref, _ = reference.rnn(x.double(), h0.double(), *(w.double() for w in ws))
    assert rel_err(out, ref) <= FP32_RTOL


@pytest.mark.parametrize("dtype", dtype_params([torch.float32, torch.float64, torch.bfloat16]))
@pytest.mark.parametrize("used", ["output_only", "h_n_only"])
def test_loss_on_one_output(used, dtype, device, make):
    """A loss on h_n alone (or output alone): the other output's gradient is None."""
    w_ih, w_hh, b_ih, b_hh = rnn_weights(make, 6, 10)
    inputs = dict(x=make(12, 3, 6), h0=make(3, 10), w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh)
    check_against_reference(fusedseq.rnn, reference.rnn, inputs, dtype, make, baseline=torch_rnn,
                            used_outputs=[used == "output_only", used == "h_n_only"], out_names=("output", "h_n"))


@pytest.mark.parametrize("dtype", dtype_params([torch.float32, torch.float64]))
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("h0_given", [True, False])
def test_matches_nn_rnn(h0_given, batch_first, bias, nonlinearity, dtype, device, make):
    torch.manual_seed(4321)
    T, B, I, H = 11, 4, 7, 13
    mod = torch.nn.RNN(I, H, num_layers=1, nonlinearity=nonlinearity, bias=bias,
                       batch_first=batch_first).to(device, dtype)
    x = make(*((B, T, I) if batch_first else (T, B, I)), dtype=dtype)
    h0 = make(B, H, dtype=dtype) if h0_given else None
    leaves = [x.clone().requires_grad_()] + ([h0.clone().requires_grad_()] if h0_given else [])
    theirs_out, theirs_hn = mod(leaves[0], None if h0 is None else leaves[1].unsqueeze(0))
    ours_leaves = [t.detach().clone().requires_grad_() for t in leaves]
    ours_out, ours_hn = fusedseq.rnn(ours_leaves[0], ours_leaves[1] if h0_given else None, mod.weight_ih_l0,
                                     mod.weight_hh_l0, mod.bias_ih_l0 if bias else None,
                                     mod.bias_hh_l0 if bias else None, nonlinearity, batch_first)
    tol = FP32_RTOL if dtype == torch.float32 else 1e-12
    assert rel_err(ours_out, theirs_out) <= tol
    assert rel_err(ours_hn, theirs_hn.squeeze(0)) <= tol
    g_out, g_hn = make(*theirs_out.shape, dtype=dtype), make(B, H, dtype=dtype)
    params = list(mod.parameters())
    theirs = torch.autograd.grad([theirs_out, theirs_hn], leaves + params, [g_out, g_hn.unsqueeze(0)])
    ours = torch.autograd.grad([ours_out, ours_hn], ours_leaves + params, [g_out, g_hn])
    for a, b in zip(ours, theirs):
        assert rel_err(a, b) <= tol


def _gradcheck_args(make, T, B, I, H, h0=True):
    kw = dict(dtype=torch.float64, requires_grad=True)
    return (make(T, B, I, **kw), make(B, H, **kw) if h0 else None, make(H, I, scale=0.5, **kw),
            make(H, H, scale=0.4, **kw), make(H, **kw), make(H, **kw))


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_gradcheck(nonlinearity, device, make):
    args = _gradcheck_args(make, 4, 2, 3, 5)
    assert torch.autograd.gradcheck(lambda *a: fusedseq.rnn(*a, nonlinearity=nonlinearity), args)


@pytest.mark.parametrize("which", [0, 1], ids=["output_only", "h_n_only"])
def test_gradcheck_one_output(which, device, make):
    args = _gradcheck_args(make, 5, 2, 3, 4)
    assert torch.autograd.gradcheck(lambda *a: fusedseq.rnn(*a)[which], args)


def test_gradcheck_batch_first_no_h0(device, make):
    args = _gradcheck_args(make, 3, 2, 4, 3, h0=False)
    x = args[0].detach().transpose(0, 1).contiguous().requires_grad_()
    assert torch.autograd.gradcheck(lambda *a: fusedseq.rnn(*a, batch_first=True), (x, *args[1:]))


def test_gradcheck_unbatched(device, make):
    kw = dict(dtype=torch.float64, requires_grad=True)
    args = (make(4, 3, **kw), make(5, **kw), make(5, 3, scale=0.5, **kw), make(5, 5, scale=0.4, **kw))
    assert torch.autograd.gradcheck(lambda *a: fusedseq.rnn(*a), args)


# ------------------------------------------------------------------ raw ops --
OPCHECK_SAMPLES = [
    ("fp32_bias", torch.float32, 4, 3, 5, 6, (True, True), "tanh", False),
    ("fp64_nobias_relu_noncontig", torch.float64, 3, 2, 4, 5, (False, False), "relu", True),
    ("bf16_bih_T1", torch.bfloat16, 1, 2, 16, 16, (True, False), "tanh", False),
    ("fp16_bhh_B1", torch.float16, 5, 1, 3, 2, (False, True), "relu", False),
]


def _raw_sample(make, dtype, T, B, I, H, bias, noncontig, requires_grad=True):
    w_ih, w_hh, b_ih, b_hh = (None if t is None else t.to(dtype).requires_grad_(requires_grad)
                              for t in rnn_weights(make, I, H, bias=bias))
    if noncontig:
        x = make(B, T, I, dtype=dtype, requires_grad=requires_grad).transpose(0, 1)
        h0 = make(H, B, dtype=dtype, requires_grad=requires_grad).T
    else:
        x, h0 = make(T, B, I, dtype=dtype, requires_grad=requires_grad), make(B, H, dtype=dtype,
                                                                              requires_grad=requires_grad)
    return x, h0, w_ih, w_hh, b_ih, b_hh


@pytest.mark.parametrize("sample", OPCHECK_SAMPLES, ids=[s[0] for s in OPCHECK_SAMPLES])
def test_opcheck_rnn(sample, device, make):
    _, dtype, T, B, I, H, bias, nl, noncontig = sample
    torch.library.opcheck(ops.rnn.default, (*_raw_sample(make, dtype, T, B, I, H, bias, noncontig), nl))


@pytest.mark.parametrize("sample", OPCHECK_SAMPLES, ids=[s[0] for s in OPCHECK_SAMPLES])
def test_opcheck_rnn_backward(sample, device, make):
    _, dtype, T, B, I, H, bias, nl, noncontig = sample
    x, h0, w_ih, w_hh, b_ih, b_hh = _raw_sample(make, dtype, T, B, I, H, bias, noncontig, requires_grad=False)
    output, _ = ops.rnn(x, h0, w_ih, w_hh, b_ih, b_hh, nl)
    torch.library.opcheck(ops.rnn_backward.default,
                          (make(T, B, H, dtype=dtype), make(B, H, dtype=dtype), output, x, h0, w_ih, w_hh, nl))


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_raw_backward_op_matches_autograd_of_reference(nonlinearity, device, make):
    T, B, I, H = 6, 3, 5, 7
    x, h0 = make(T, B, I, dtype=torch.float64), make(B, H, dtype=torch.float64)
    w_ih, w_hh, b_ih, b_hh = rnn_weights(make, I, H)
    g_out, g_hn = make(T, B, H, dtype=torch.float64), make(B, H, dtype=torch.float64)
    output, h_n = ops.rnn(x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity)
    got = ops.rnn_backward(g_out, g_hn, output, x, h0, w_ih, w_hh, nonlinearity)
    _, ref = fwd_bwd(lambda **kw: reference.rnn(**kw, nonlinearity=nonlinearity),
                     dict(x=x, h0=h0, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh), [g_out, g_hn])
    for got_t, name in zip(got, ["x", "h0", "w_ih", "w_hh", "b_ih"]):
        assert rel_err(got_t, ref[name]) <= 1e-12, name


def test_compile_fullgraph(device, make):
    def f(x, h0, w_ih, w_hh, b_ih, b_hh):
        out, h_n = fusedseq.rnn(x.cos(), h0, w_ih, w_hh, b_ih, b_hh, "tanh")
        return out * 3.0, h_n.sin()

    args = [t.float().requires_grad_() for t in (make(6, 3, 5, dtype=torch.float64),
                                                 make(3, 8, dtype=torch.float64), *rnn_weights(make, 5, 8))]
    assert_compiled_matches_eager(f, args, make)


# ------------------------------------------------------- values and memory --
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_nan_propagates_forward_in_time_only(nonlinearity, device, make):
    """A NaN in x at step t, batch b poisons h_t.. of that batch row only."""
    T, B, I, H = 8, 3, 4, 6
    x, h0 = make(T, B, I), make(B, H)
    ws = [t.float() for t in rnn_weights(make, I, H)]
    x[3, 1, 2] = math.nan
    out, h_n = fusedseq.rnn(x, h0, *ws, nonlinearity=nonlinearity)
    ref, _ = reference.rnn(x.double(), h0.double(), *(w.double() for w in ws), nonlinearity=nonlinearity)
    assert out[3:, 1].isnan().all() and h_n[1].isnan().all()
    assert ref[3:, 1].isnan().all()
    clean = torch.ones(T, B, dtype=torch.bool, device=out.device)
    clean[3:, 1] = False
    assert torch.isfinite(out[clean]).all()
    assert rel_err(out[clean], ref[clean]) <= FP32_RTOL


@pytest.mark.parametrize("dtype", dtype_params())
def test_outputs_fully_written(dtype, device, make):
    T, B, I, H = 9, 5, 13, 67
    x, h0 = make(T, B, I, dtype=dtype, requires_grad=True), make(B, H, dtype=dtype, requires_grad=True)
    ws = [t.to(dtype).requires_grad_() for t in rnn_weights(make, I, H)]
    cots = [make(T, B, H, dtype=dtype), make(B, H, dtype=dtype)]
    shapes = [(T, B, H), (B, H), (T, B, I), (H, I), (H, H), (H,)]
    sizes = [nbytes(s, d) for s in shapes for d in (dtype, torch.float32)]
    poison_heap(*sizes)
    outs = fusedseq.rnn(x, h0, *ws)
    poison_heap(*sizes)
    grads = torch.autograd.grad(outs, [x, h0, *ws], cots)
    ref_outs, ref_grads = fwd_bwd(reference.rnn, dict(x=x, h0=h0, w_ih=ws[0], w_hh=ws[1], b_ih=ws[2], b_hh=ws[3]),
                                  cots, dtype=torch.float64)
    tol = 2e-2 if dtype in (torch.float16, torch.bfloat16) else (FP32_RTOL if dtype == torch.float32 else 1e-12)
    for t in (*outs, *grads):
        assert torch.isfinite(t).all()
    for got, ref in zip(outs, ref_outs):
        assert rel_err(got, ref) <= tol
    for got, name in zip(grads, ["x", "h0", "w_ih", "w_hh", "b_ih", "b_hh"]):
        assert rel_err(got, ref_grads[name]) <= tol, name


@pytest.mark.parametrize("dtype", dtype_params([torch.float32, torch.float16]))
def test_deterministic(dtype, device, make):
    x, h0 = make(20, 6, 30, dtype=dtype, requires_grad=True), make(6, 50, dtype=dtype, requires_grad=True)
    ws = [t.to(dtype).requires_grad_() for t in rnn_weights(make, 30, 50)]
    cots = [make(20, 6, 50, dtype=dtype), make(6, 50, dtype=dtype)]
    runs = []
    for _ in range(2):
        outs = fusedseq.rnn(x, h0, *ws)
        runs.append((*outs, *torch.autograd.grad(outs, [x, h0, *ws], cots)))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_thread_count_does_not_change_result(make):
    x, h0 = make(10, 33, 20, dtype=torch.float64), make(33, 70, dtype=torch.float64)
    ws = rnn_weights(make, 20, 70)
    n = torch.get_num_threads()
    out_n, _ = fusedseq.rnn(x, h0, *ws)
    try:
        torch.set_num_threads(1)
        out_1, _ = fusedseq.rnn(x, h0, *ws)
    finally:
        torch.set_num_threads(n)
    assert rel_err(out_n, out_1) <= 1e-13


@pytest.mark.parametrize("autocast_dtype", dtype_params([torch.bfloat16, torch.float16]))
def test_autocast(autocast_dtype, device, make):
    x, h0 = make(10, 4, 12), make(4, 16)
    ws = [t.float() for t in rnn_weights(make, 12, 16)]
    with torch.autocast(torch.device(device).type, dtype=autocast_dtype):
        out, h_n = fusedseq.rnn(x, h0, *ws)
    assert out.dtype == h_n.dtype == autocast_dtype
    rounded = [t.to(autocast_dtype) for t in (x, h0, *ws)]
    ref_out, ref_hn = reference.rnn(*(t.double() for t in rounded))
    base_out, base_hn = torch_rnn(*rounded)
    assert_accurate(out, ref_out, autocast_dtype, baseline=base_out, what="output")
    assert_accurate(h_n, ref_hn, autocast_dtype, baseline=base_hn, what="h_n")


def test_double_backward_is_refused(device, make):
    """Differentiating the gradient must raise, not silently return zeros."""
    args = _gradcheck_args(make, 3, 2, 3, 4)
    x = args[0]
    dx, = torch.autograd.grad(fusedseq.rnn(*args)[0].sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(dx.sum(), x)


# Widths around the 16-column chunks / 8-wide vectors, batches on both sides
# of the parallel threshold; fp32 both ways.
@pytest.mark.parametrize("H", [1, 3, 8, 9, 16, 17, 33, 130])
@pytest.mark.parametrize("B", [1, 40])
def test_width_sweep(B, H, device, make):
    I = H + 5
    w_ih, w_hh, b_ih, b_hh = rnn_weights(make, I, H)
    inputs = dict(x=make(4, B, I), h0=make(B, H), w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh)
    check_against_reference(fusedseq.rnn, reference.rnn, inputs, torch.float32, make, out_names=("output", "h_n"))


def test_compile_fullgraph_backward_op(device, make):
    torch._dynamo.reset()
    T, B, I, H = 5, 3, 4, 6
    x, h0 = make(T, B, I), make(B, H)
    w_ih, w_hh, b_ih, b_hh = (t.float() for t in rnn_weights(make, I, H))
    output, _ = ops.rnn(x, h0, w_ih, w_hh, b_ih, b_hh, "tanh")
    g_out, g_hn = make(T, B, H), make(B, H)

    def f(g_out, g_hn, output, x, h0, w_ih, w_hh):
        return ops.rnn_backward(g_out, g_hn.exp(), output, x, h0, w_ih, w_hh, "tanh")

    args = (g_out, g_hn, output, x, h0, w_ih, w_hh)
    got = torch.compile(f, fullgraph=True)(*args)
    for a, b in zip(got, f(*args)):
        assert rel_err(a, b) <= 1e-6
    torch._dynamo.reset()
