"""fusedseq.lstm / lstm_cell / gru / gru_cell and their raw ops, forward and
every gradient, against the float64 reference, against PyTorch's own path
(nn.LSTM, nn.GRU and their cells with copied weights) and in low precision
against PyTorch's own error. Every check runs for both kinds."""
from __future__ import annotations

import math

import pytest
import torch

import fusedseq
import fusedseq.reference

from conftest import (DTYPE_IDS, FP32_RTOL, FP64_RTOL, assert_accurate, assert_compiled_matches_eager,
                      check_against_reference, dtype_params, fwd_bwd, nbytes, poison_heap, rel_err, with_views)
from _gated import GRU, LSTM, gated_weights, kind_params, module_state, state_tensors

# One thread (conftest.one_thread); test_thread_count_does_not_change_result sets two.
pytestmark = pytest.mark.usefixtures("one_thread")

# (id, T, B, I, H, (b_ih?, b_hh?), states given?, layout, dtype). B=None: unbatched.
# The grid, T ∈ {1, 7, 200}, B ∈ {1, 3, 16}, H ∈ {1, 17, 256}, I ≠ H,
# in four dtypes, as a pairwise design instead of the full product: the first
# twelve rows hold every pair of values of (T, B, H, dtype) (row (d, j) of
# dtype d has T = j, H = j + d, B = j + 2d mod 3 for d < 3; the fp16 rows are
# one more permutation), so each size meets each other size and each dtype at
# least once, while T=200 meets H=256 only once, in fp32 at the benchmark's
# shape (B=16); the low-precision rows with T=200 have small H, and H=256 in
# low precision runs one step. Biases (both, none, b_ih or b_hh alone), a
# given or missing state and the layouts are spread so that each dtype sees
# each layout and both sides of each switch. Layouts:
# "batch_first": x is (B, T, I), a transposed (T, B, I) view to the op.
# "noncontig": batch_first plus transposed views of both weights and every
# other column of (B, 2H) states. "expanded_x": one input for every step, a
# (1, B, I) tensor expanded over T (stride 0, overlapping).
F32, F64, BF16, F16 = torch.float32, torch.float64, torch.bfloat16, torch.float16
SEQ_CASES = [
    ("T1_B1_H1_bih_only", 1, 1, 2, 1, (True, False), True, "contig", F32),
    ("T7_B3_H17_nobias_nostate_expanded_x", 7, 3, 5, 17, (False, False), False, "expanded_x", F32),
    ("T200_B16_H256_bf", 200, 16, 192, 256, (True, True), True, "batch_first", F32),
    ("T1_B16_H17_bih_only_bf", 1, 16, 6, 17, (True, False), True, "batch_first", F64),
    ("T7_B1_H256_bhh_only_nostate_expanded_x", 7, 1, 100, 256, (False, True), False, "expanded_x", F64),
    ("T200_B3_H1_noncontig", 200, 3, 3, 1, (True, True), True, "noncontig", F64),
    ("T1_B3_H256_bhh_only_noncontig", 1, 3, 130, 256, (False, True), True, "noncontig", BF16),
    ("T7_B16_H1_expanded_x", 7, 16, 4, 1, (True, True), True, "expanded_x", BF16),
    ("T200_B1_H17_nobias_nostate_bf", 200, 1, 9, 17, (False, False), False, "batch_first", BF16),
    ("T1_B16_H256_nobias_nostate", 1, 16, 100, 256, (False, False), False, "contig", F16),
    ("T7_B1_H17_bih_only_noncontig", 7, 1, 12, 17, (True, False), True, "noncontig", F16),
    ("T200_B3_H1_bf", 200, 3, 5, 1, (True, True), True, "batch_first", F16),
    # the remaining (dtype, layout) and (dtype, bias) pairs, at cheap shapes
    ("T7_B3_H40_bhh_only_expanded_x", 7, 3, 6, 40, (False, True), True, "expanded_x", F16),
    ("T7_B3_H17_bhh_only_nostate_noncontig", 7, 3, 12, 17, (False, True), False, "noncontig", F32),
    ("T7_B3_H17_nobias_contig", 7, 3, 9, 17, (False, False), True, "contig", F64),
    ("T7_B3_H17_bih_only_contig", 7, 3, 9, 17, (True, False), True, "contig", BF16),
    # one unbatched (T, I) sequence each way
    ("T6_unbatched", 6, None, 5, 7, (True, True), True, "contig", F64),
    ("T6_unbatched_nostate", 6, None, 5, 7, (False, False), False, "contig", BF16),
]


def seq_case(make, kind, T, B, I, H, bias, states_given, layout):
    w_ih, w_hh, b_ih, b_hh = gated_weights(make, I, H, kind.gates, bias=bias)
    views, batch_first = {}, layout in ("batch_first", "noncontig")
    if B is None:
        x, state_shape = make(T, I), (H,)
    else:
        x, state_shape = (make(B, T, I) if batch_first else make(T, B, I)), (B, H)
    states = state_tensors(make, kind, state_shape) if states_given else dict.fromkeys(kind.states)
    if layout == "expanded_x":
        x = make(1, B, I)
        views = {"x": lambda t: t.expand(T, B, I)}
    if layout == "noncontig":
        w_ih, w_hh = w_ih.T.contiguous(), w_hh.T.contiguous()
        views = {"w_ih": lambda t: t.T, "w_hh": lambda t: t.T}
        if states_given:
            states = state_tensors(make, kind, (B, 2 * H))
            views.update({n: (lambda t: t[:, ::2]) for n in kind.states})
    return dict(x=x, **states, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh), views, batch_first


def _seq_param(c):
    # The benchmark's shape is 40 s per kind on the emulator: the CUDA kernels'
    # long sequences are test_lstm_gru_cuda.py's (T = 40 there, T = 1000 on a GPU).
    big = c[1] == 200 and c[4] == 256
    return pytest.param(c, id=f"{DTYPE_IDS[c[-1]]}-{c[0]}",
                        marks=[pytest.mark.skip_emulated("T=200 at B=16, H=256")] if big else [])


@pytest.mark.ops("lstm", "lstm_backward", "gru", "gru_backward")
@pytest.mark.parametrize("case", [_seq_param(c) for c in SEQ_CASES])
@pytest.mark.parametrize("kind", kind_params())
def test_sequence_forward_backward(kind, case, device, make):
    _, T, B, I, H, bias, states_given, layout, dtype = case
    inputs, views, batch_first = seq_case(make, kind, T, B, I, H, bias, states_given, layout)
    if layout == "noncontig" and H > 1:  # (4, 1) is contiguous either way
        assert not views["w_hh"](inputs["w_hh"]).is_contiguous()
    kw = dict(batch_first=batch_first)
    outs, grads = check_against_reference(
        with_views(kind.seq, views, **kw), with_views(kind.seq_ref, views, **kw), inputs, dtype, make,
        baseline=with_views(kind.seq_torch, views, **kw), device=device, out_names=kind.seq_outputs)
    output, h_n = outs[0], outs[1]
    if B is None:
        assert output.shape == (T, H) and h_n.shape == (H,)
    else:
        assert output.shape == ((B, T, H) if batch_first else (T, B, H)) and h_n.shape == (B, H)
    assert torch.equal(h_n, output[:, -1] if batch_first else output[-1])  # h_n is exactly the last step
    assert all(o.dtype == dtype for o in outs)
    assert set(grads) == {n for n, t in inputs.items() if t is not None}
    for n, g in grads.items():
        assert g.dtype == dtype and g.shape == inputs[n].shape, n


# (id, B, I, H, (b_ih?, b_hh?), states given?, layout). B=None: unbatched.
# "noncontig": x a transposed (I, B) view, w_ih a transposed view, the
# states every other column of (B, 2H).
CELL_CASES = [
    ("B1_H1", 1, 2, 1, (True, True), True, "contig"),
    ("B1_H17_nobias_nostate", 1, 7, 17, (False, False), False, "contig"),
    ("B3_H17_bih_only_noncontig", 3, 33, 17, (True, False), True, "noncontig"),
    ("B3_H256_bhh_only_nostate", 3, 20, 256, (False, True), False, "contig"),
    ("B16_H256", 16, 130, 256, (True, True), True, "contig"),
    ("B16_H17_noncontig", 16, 9, 17, (True, True), True, "noncontig"),
    ("unbatched", None, 9, 6, (True, True), True, "contig"),
    ("unbatched_nostate", None, 9, 6, (False, False), False, "contig"),
]


def cell_case(make, kind, B, I, H, bias, states_given, layout):
    w_ih, w_hh, b_ih, b_hh = gated_weights(make, I, H, kind.gates, bias=bias)
    views, names = {}, kind.cell_states
    if B is None:
        x, state_shape = make(I), (H,)
    elif layout == "noncontig":
        x, state_shape = make(I, B), (B, 2 * H)
        w_ih = w_ih.T.contiguous()
        views = {"x": lambda t: t.T, "w_ih": lambda t: t.T, **{n: (lambda t: t[:, ::2]) for n in names}}
    else:
        x, state_shape = make(B, I), (B, H)
    states = {n: (make(*state_shape) if states_given else None) for n in names}
    return dict(x=x, **states, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh), views


@pytest.mark.ops("lstm_cell", "lstm_cell_backward", "gru_cell", "gru_cell_backward")
@pytest.mark.parametrize("dtype", dtype_params())
@pytest.mark.parametrize("case", CELL_CASES, ids=[c[0] for c in CELL_CASES])
@pytest.mark.parametrize("kind", kind_params())
def test_cell_forward_backward(kind, case, dtype, device, make):
    _, B, I, H, bias, states_given, layout = case
    inputs, views = cell_case(make, kind, B, I, H, bias, states_given, layout)
    outs, grads = check_against_reference(
        with_views(kind.cell, views), with_views(kind.cell_ref, views), inputs, dtype, make,
        baseline=with_views(kind.cell_torch, views), device=device,
        out_names=tuple(n + "'" for n in kind.cell_states))
    for o in outs:
        assert o.shape == ((H,) if B is None else (B, H)) and o.dtype == dtype
    assert set(grads) == {n for n, t in inputs.items() if t is not None}


# ---------------------------------------------------- against torch modules --
@pytest.mark.parametrize("dtype", dtype_params([torch.float32, torch.float64]))
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("states_given", [True, False])
@pytest.mark.parametrize("kind", kind_params())
def test_matches_torch_module(kind, states_given, batch_first, bias, dtype, make):
    """nn.LSTM / nn.GRU with its own weights: same outputs and gradients."""
    torch.manual_seed(4321)
    T, B, I, H = 11, 4, 7, 13
    mod = kind.module(I, H, bias=bias, batch_first=batch_first).to(dtype)
    x = make(*((B, T, I) if batch_first else (T, B, I)), dtype=dtype)
    states = state_tensors(make, kind, (B, H), dtype) if states_given else {}
    theirs_leaves = {n: t.clone().requires_grad_() for n, t in dict(x=x, **states).items()}
    ours_leaves = {n: t.clone().requires_grad_() for n, t in dict(x=x, **states).items()}
    out_t, fin_t = mod(theirs_leaves["x"], module_state(kind, theirs_leaves) if states_given else None)
    fin_t = fin_t if isinstance(fin_t, tuple) else (fin_t,)
    weights = dict(w_ih=mod.weight_ih_l0, w_hh=mod.weight_hh_l0, b_ih=mod.bias_ih_l0 if bias else None,
                   b_hh=mod.bias_hh_l0 if bias else None)
    out_o, *fin_o = kind.seq(**ours_leaves, **weights, batch_first=batch_first)
    tol = FP32_RTOL if dtype == torch.float32 else FP64_RTOL
    assert rel_err(out_o, out_t) <= tol
    for a, b in zip(fin_o, fin_t):
        assert rel_err(a, b.squeeze(0)) <= tol
    cots = [make(*out_t.shape, dtype=dtype)] + [make(B, H, dtype=dtype) for _ in fin_t]
    params = list(mod.parameters())
    theirs = torch.autograd.grad([out_t, *fin_t], [*theirs_leaves.values(), *params],
                                 [cots[0], *(c.unsqueeze(0) for c in cots[1:])])
    ours = torch.autograd.grad([out_o, *fin_o], [*ours_leaves.values(), *params], cots)
    for a, b in zip(ours, theirs):
        assert rel_err(a, b) <= tol


@pytest.mark.parametrize("dtype", dtype_params([torch.float32, torch.float64]))
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batched,states_given", [(True, True), (True, False), (False, True)])
@pytest.mark.parametrize("kind", kind_params())
def test_matches_torch_cell(kind, batched, states_given, bias, dtype, make):
    torch.manual_seed(1234)
    cell = kind.cell_module(10, 20, bias=bias).to(dtype)
    shape = (6, 20) if batched else (20,)
    x = make(6, 10, dtype=dtype) if batched else make(10, dtype=dtype)
    states = [make(*shape, dtype=dtype) for _ in kind.cell_states] if states_given else []
    ours_leaves = [t.clone().requires_grad_() for t in (x, *states)]
    theirs_leaves = [t.clone().requires_grad_() for t in (x, *states)]
    hx = None if not states_given else (tuple(theirs_leaves[1:]) if kind is LSTM else theirs_leaves[1])
    expected = cell(theirs_leaves[0], hx)
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = kind.cell(*ours_leaves, *([None] * len(kind.cell_states) if not states_given else []),
                    w_ih=cell.weight_ih, w_hh=cell.weight_hh, b_ih=cell.bias_ih, b_hh=cell.bias_hh)
    got = got if isinstance(got, tuple) else (got,)
    tol = FP32_RTOL if dtype == torch.float32 else FP64_RTOL
    for a, b in zip(got, expected):
        assert a.shape == b.shape and rel_err(a, b) <= tol
    cots = [make(*shape, dtype=dtype) for _ in expected]
    params = list(cell.parameters())
    ours = torch.autograd.grad(got, ours_leaves + params, cots)
    theirs = torch.autograd.grad(expected, theirs_leaves + params, cots)
    for a, b in zip(ours, theirs):
        assert rel_err(a, b) <= tol


# ------------------------------------------------------------------ gradcheck --
def _f64(make, *shape, scale=1.0):
    return make(*shape, dtype=torch.float64, scale=scale, requires_grad=True)


def _gradcheck_weights(make, kind, I, H):
    G = kind.gates
    return _f64(make, G * H, I, scale=0.5), _f64(make, G * H, H, scale=0.4), _f64(make, G * H), _f64(make, G * H)


@pytest.mark.parametrize("kind", kind_params())
def test_gradcheck_sequence(kind, make):
    T, B, I, H = 4, 2, 3, 5
    states = [_f64(make, B, H) for _ in kind.states]
    args = (_f64(make, T, B, I), *states, *_gradcheck_weights(make, kind, I, H))
    assert torch.autograd.gradcheck(kind.seq, args)


@pytest.mark.parametrize("kind", kind_params())
def test_gradcheck_each_output(kind, make):
    """A loss on any one output alone (the others' gradients are None)."""
    T, B, I, H = 5, 2, 3, 4
    states = [_f64(make, B, H) for _ in kind.states]
    args = (_f64(make, T, B, I), *states, *_gradcheck_weights(make, kind, I, H))
    for which in range(len(kind.seq_outputs)):
        assert torch.autograd.gradcheck(lambda *a: kind.seq(*a)[which], args), kind.seq_outputs[which]


@pytest.mark.parametrize("kind", kind_params())
def test_gradcheck_batch_first_unbatched_no_state(kind, make):
    T, B, I, H = 3, 2, 4, 3
    w = _gradcheck_weights(make, kind, I, H)
    nones = [None] * len(kind.states)
    assert torch.autograd.gradcheck(lambda x, *w: kind.seq(x, *nones, *w, batch_first=True),
                                    (_f64(make, B, T, I), *w))
    states = [_f64(make, H) for _ in kind.states]
    assert torch.autograd.gradcheck(kind.seq, (_f64(make, T, I), *states, *w))


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("kind", kind_params())
def test_gradcheck_cell(kind, batched, make):
    B, I, H = 3, 4, 5
    shape = (B, H) if batched else (H,)
    args = (_f64(make, *((B, I) if batched else (I,))), *[_f64(make, *shape) for _ in kind.cell_states],
            *_gradcheck_weights(make, kind, I, H))
    assert torch.autograd.gradcheck(kind.cell, args)


@pytest.mark.parametrize("kind", kind_params())
def test_gradcheck_cell_no_bias(kind, make):
    B, I, H = 2, 3, 4
    w_ih, w_hh, _, _ = _gradcheck_weights(make, kind, I, H)
    args = (_f64(make, B, I), *[_f64(make, B, H) for _ in kind.cell_states], w_ih, w_hh)
    assert torch.autograd.gradcheck(kind.cell, args)


# -------------------------------------------------------------------- raw ops --
OPCHECK_SAMPLES = [
    ("fp32_bias", torch.float32, 4, 3, 5, 6, (True, True), False),
    ("fp64_nobias_noncontig", torch.float64, 3, 2, 4, 5, (False, False), True),
    ("bf16_bih_T1", torch.bfloat16, 1, 2, 16, 16, (True, False), False),
    ("fp16_bhh_B1", torch.float16, 5, 1, 3, 2, (False, True), False),
]


def _raw_inputs(make, kind, dtype, T, B, I, H, bias, noncontig, requires_grad=True, cell=False):
    """The raw op's tensor arguments, in schema order."""
    w_ih, w_hh, b_ih, b_hh = (None if t is None else t.to(dtype).requires_grad_(requires_grad)
                              for t in gated_weights(make, I, H, kind.gates, bias=bias))
    x_shape = (B, I) if cell else (T, B, I)
    if noncontig:
        x = make(*reversed(x_shape), dtype=dtype, requires_grad=requires_grad).permute(
            *reversed(range(len(x_shape))))
        states = [make(H, B, dtype=dtype, requires_grad=requires_grad).T for _ in kind.states]
    else:
        x = make(*x_shape, dtype=dtype, requires_grad=requires_grad)
        states = [make(B, H, dtype=dtype, requires_grad=requires_grad) for _ in kind.states]
    return [x, *states, w_ih, w_hh, b_ih, b_hh]


@pytest.mark.parametrize("sample", OPCHECK_SAMPLES, ids=[s[0] for s in OPCHECK_SAMPLES])
@pytest.mark.parametrize("cell", [False, True], ids=["sequence", "cell"])
@pytest.mark.parametrize("kind", kind_params())
def test_opcheck_forward(kind, cell, sample, make):
    _, dtype, T, B, I, H, bias, noncontig = sample
    op = kind.raw("_cell" if cell else "")
    torch.library.opcheck(op.default, tuple(_raw_inputs(make, kind, dtype, T, B, I, H, bias, noncontig,
                                                        cell=cell)))


def _backward_args(make, kind, cell, x, states, w_ih, w_hh, outs):
    """The raw backward op's arguments for a forward that returned ``outs``."""
    dtype = x.dtype
    if kind is LSTM and cell:
        return (make(*states[0].shape, dtype=dtype), make(*states[1].shape, dtype=dtype), outs[2], x, *states,
                w_ih, w_hh)
    if kind is LSTM:
        output, cell_states, gates = outs
        return (make(*output.shape, dtype=dtype), make(*cell_states.shape, dtype=cell_states.dtype), output,
                cell_states, gates, x, *states, w_ih, w_hh)
    if cell:
        return (make(*states[0].shape, dtype=dtype), outs[1], x, states[0], w_ih, w_hh)
    return (make(*outs[0].shape, dtype=dtype), outs[0], outs[1], x, states[0], w_ih, w_hh)


@pytest.mark.parametrize("sample", OPCHECK_SAMPLES, ids=[s[0] for s in OPCHECK_SAMPLES])
@pytest.mark.parametrize("cell", [False, True], ids=["sequence", "cell"])
@pytest.mark.parametrize("kind", kind_params())
def test_opcheck_backward(kind, cell, sample, make):
    _, dtype, T, B, I, H, bias, noncontig = sample
    suffix = "_cell" if cell else ""
    x, *rest = _raw_inputs(make, kind, dtype, T, B, I, H, bias, noncontig, requires_grad=False, cell=cell)
    states, (w_ih, w_hh, b_ih, b_hh) = rest[:len(kind.states)], rest[len(kind.states):]
    outs = kind.raw(suffix)(x, *states, w_ih, w_hh, b_ih, b_hh)
    torch.library.opcheck(kind.raw(suffix + "_backward").default,
                          _backward_args(make, kind, cell, x, states, w_ih, w_hh, outs))


@pytest.mark.parametrize("kind", kind_params())
def test_raw_backward_op_matches_autograd_of_reference(kind, make):
    """The sequence's backward op on its own, every output, in float64."""
    T, B, I, H = 6, 3, 5, 7
    x = make(T, B, I, dtype=torch.float64)
    states = [make(B, H, dtype=torch.float64) for _ in kind.states]
    w_ih, w_hh, b_ih, b_hh = gated_weights(make, I, H, kind.gates)
    outs = kind.raw()(x, *states, w_ih, w_hh, b_ih, b_hh)
    args = _backward_args(make, kind, False, x, states, w_ih, w_hh, outs)
    got = kind.raw("_backward")(*args)
    inputs = dict(x=x, **dict(zip(kind.states, states)), w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh)
    if kind is LSTM:  # cotangents of (output, cell_states): c_t of every step through a per-step loop
        def ref(x, h0, c0, w_ih, w_hh, b_ih, b_hh):
            from fusedseq import reference
            hs, cs, state = [], [], (h0, c0)
            for t in range(x.shape[0]):
                state = reference.lstm_cell(x[t], state, w_ih, w_hh, b_ih, b_hh)
                hs.append(state[0]), cs.append(state[1])
            return torch.stack(hs), torch.stack(cs)
        cots = [args[0], args[1]]
        names = ["x", "h0", "c0", "w_ih", "w_hh", "b_ih"]
    else:
        ref, cots = (lambda **kw: kind.seq_ref(**kw)[0]), [args[0]]
        names = ["x", "h0", "w_ih", "w_hh", "b_ih", "b_hh"]
    _, expected = fwd_bwd(ref, inputs, cots)
    for g, name in zip(got, names):
        assert rel_err(g, expected[name]) <= FP64_RTOL, name
    if kind is LSTM:
        assert rel_err(got[5], expected["b_hh"]) <= FP64_RTOL  # grad_b serves both biases


@pytest.mark.parametrize("kind", kind_params())
def test_saved_workspace_is_compute_dtype(kind, make):
    """What the forward keeps for the backward: (T, B, 4H) gates (and for the
    LSTM (T, B, H) cell states) in float32 for bfloat16 inputs, as documented."""
    T, B, I, H = 5, 3, 4, 6
    x = make(T, B, I, dtype=torch.bfloat16)
    states = [make(B, H, dtype=torch.bfloat16) for _ in kind.states]
    w = [t.to(torch.bfloat16) for t in gated_weights(make, I, H, kind.gates)]
    outs = kind.raw()(x, *states, *w)
    assert outs[0].shape == (T, B, H) and outs[0].dtype == torch.bfloat16
    assert outs[-1].shape == (T, B, 4 * H) and outs[-1].dtype == torch.float32
    if kind is LSTM:
        assert outs[1].shape == (T, B, H) and outs[1].dtype == torch.float32
        # c_n of the public function is the last cell state, rounded once.
        _, (_, c_n) = torch.ops.fusedseq.lstm(x, *states, *w)[:1], (None, outs[1][-1].to(torch.bfloat16))
        assert torch.equal(LSTM.seq(x, *states, *w)[2], c_n)


# ------------------------------------------------------------------ compile --
@pytest.mark.parametrize("cell", [False, True], ids=["sequence", "cell"])
@pytest.mark.parametrize("kind", kind_params())
def test_compile_fullgraph(kind, cell, make):
    """torch.compile(fullgraph=True) through the public function, forward and backward."""
    T, B, I, H = 6, 3, 5, 8
    fn, names = (kind.cell, kind.cell_states) if cell else (kind.seq, kind.states)

    def f(x, *rest):
        out = fn(x.cos(), *rest)
        return tuple(o * 3.0 for o in (out if isinstance(out, tuple) else (out,)))

    x = make(*((B, I) if cell else (T, B, I)), dtype=torch.float64)
    args = [t.float().requires_grad_() for t in (x, *[make(B, H, dtype=torch.float64) for _ in names],
                                                 *gated_weights(make, I, H, kind.gates))]
    assert_compiled_matches_eager(f, args, make)


@pytest.mark.parametrize("cell", [False, True], ids=["sequence", "cell"])
@pytest.mark.parametrize("kind", kind_params())
def test_compile_fullgraph_backward_op(kind, cell, make):
    torch._dynamo.reset()
    suffix = "_cell" if cell else ""
    x, *rest = _raw_inputs(make, kind, torch.float32, 5, 3, 4, 6, (True, True), False, requires_grad=False,
                           cell=cell)
    states, (w_ih, w_hh, b_ih, b_hh) = rest[:len(kind.states)], rest[len(kind.states):]
    outs = kind.raw(suffix)(x, *states, w_ih, w_hh, b_ih, b_hh)
    args = _backward_args(make, kind, cell, x, states, w_ih, w_hh, outs)
    op = kind.raw(suffix + "_backward")

    def f(g, *rest):
        return op(g.exp(), *rest)

    got = torch.compile(f, fullgraph=True)(*args)
    for a, b in zip(got, f(*args)):
        assert rel_err(a, b) <= 1e-6
    torch._dynamo.reset()


# --------------------------------------------------------- training details --
@pytest.mark.parametrize("kind", kind_params())
def test_partial_requires_grad(kind, make):
    """Only the weights need gradients (the usual training case); then only x."""
    T, B, I, H = 7, 3, 5, 6
    inputs = dict(x=make(T, B, I, dtype=torch.float64), **state_tensors(make, kind, (B, H)),
                  **dict(zip(("w_ih", "w_hh", "b_ih", "b_hh"), gated_weights(make, I, H, kind.gates))))
    cots = [make(T, B, H, dtype=torch.float64)] + [make(B, H, dtype=torch.float64) for _ in kind.states]
    for names in (["w_ih", "w_hh"], ["x"]):
        _, got = fwd_bwd(kind.seq, inputs, cots, grad_of=names, dtype=torch.float32)
        _, ref = fwd_bwd(kind.seq_ref, inputs, cots, grad_of=names)
        assert set(got) == set(names)
        for n in names:
            assert rel_err(got[n], ref[n]) <= FP32_RTOL, n


@pytest.mark.parametrize("kind", kind_params())
def test_inference_mode(kind, make):
    T, B, I, H = 5, 2, 3, 4
    x, states = make(T, B, I), [make(B, H) for _ in kind.states]
    w = [t.float() for t in gated_weights(make, I, H, kind.gates)]
    with torch.inference_mode():
        outs = kind.seq(x, *states, *w)
    ref = kind.seq_ref(x.double(), *(s.double() for s in states), *(t.double() for t in w))
    for a, b in zip(outs, ref):
        assert rel_err(a, b) <= FP32_RTOL


@pytest.mark.parametrize("kind", kind_params())
def test_double_backward_is_refused(kind, make):
    T, B, I, H = 3, 2, 3, 4
    x = _f64(make, T, B, I)
    args = (x, *[_f64(make, B, H) for _ in kind.states], *_gradcheck_weights(make, kind, I, H))
    dx, = torch.autograd.grad(kind.seq(*args)[0].sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(dx.sum(), x)
    xc = _f64(make, B, I)
    out = kind.cell(xc, *[_f64(make, B, H) for _ in kind.cell_states], *_gradcheck_weights(make, kind, I, H))
    dxc, = torch.autograd.grad((out[0] if isinstance(out, tuple) else out).sum(), xc, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(dxc.sum(), xc)


@pytest.mark.parametrize("autocast_dtype", dtype_params([torch.bfloat16, torch.float16]))
@pytest.mark.parametrize("kind", kind_params())
def test_autocast(kind, autocast_dtype, make):
    """Under autocast the forward runs in the autocast dtype, as torch's own LSTM/GRU do."""
    T, B, I, H = 10, 4, 12, 16
    x, states = make(T, B, I), [make(B, H) for _ in kind.states]
    w = [t.float() for t in gated_weights(make, I, H, kind.gates)]
    with torch.autocast("cpu", dtype=autocast_dtype):
        outs = kind.seq(x, *states, *w)
        cell_outs = kind.cell(x[0], *states, *w)
    cell_outs = cell_outs if isinstance(cell_outs, tuple) else (cell_outs,)
    assert all(o.dtype == autocast_dtype for o in (*outs, *cell_outs))
    rounded = [t.to(autocast_dtype) for t in (x, *states, *w)]
    ref, base = kind.seq_ref(*(t.double() for t in rounded)), kind.seq_torch(*rounded)
    for o, r, b, name in zip(outs, ref, base, kind.seq_outputs):
        assert_accurate(o, r, autocast_dtype, baseline=b, what=name)


def test_autocast_backward_gives_fp32_grads(make):
    B, I, H = 4, 6, 5
    x = make(B, I, requires_grad=True)
    h, c = make(B, H, requires_grad=True), make(B, H, requires_grad=True)
    ws = [t.float().requires_grad_() for t in gated_weights(make, I, H, 4)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h_next, c_next = LSTM.cell(x, h, c, *ws)
    grads = torch.autograd.grad(h_next.float().sum() + c_next.float().sum(), [x, h, c, *ws])
    _, ref = fwd_bwd(LSTM.cell_ref, dict(x=x, h=h, c=c, w_ih=ws[0], w_hh=ws[1], b_ih=ws[2], b_hh=ws[3]),
                     [torch.ones(B, H), torch.ones(B, H)], dtype=torch.float64)
    for got, name in zip(grads, ["x", "h", "c", "w_ih", "w_hh", "b_ih", "b_hh"]):
        assert got.dtype == torch.float32
        assert rel_err(got, ref[name]) <= 3e-2, name  # bf16 forward: only the plumbing is checked


# -------------------------------------------------------- values and memory --
@pytest.mark.parametrize("kind", kind_params())
def test_nan_propagates_forward_in_time_only(kind, make):
    """A NaN in x at step 3, batch row 1 poisons that row from step 3 on, nothing else."""
    T, B, I, H = 8, 3, 4, 6
    x, states = make(T, B, I), [make(B, H) for _ in kind.states]
    w = [t.float() for t in gated_weights(make, I, H, kind.gates)]
    x[3, 1, 2] = math.nan
    out = kind.seq(x, *states, *w)[0]
    ref = kind.seq_ref(x.double(), *(s.double() for s in states), *(t.double() for t in w))[0]
    assert out[3:, 1].isnan().all() and ref[3:, 1].isnan().all()
    clean = torch.ones(T, B, dtype=torch.bool)
    clean[3:, 1] = False
    assert torch.isfinite(out[clean]).all()
    assert rel_err(out[clean], ref[clean]) <= FP32_RTOL


@pytest.mark.parametrize("value", [math.inf, -math.inf], ids=["inf", "neg_inf"])
@pytest.mark.parametrize("kind", kind_params())
def test_saturating_inputs_like_reference(kind, value, make):
    """An infinite input saturates the gates (σ → 0 or 1, tanh → ±1) exactly as
    in the reference; rows that never see it are untouched."""
    B, I, H = 4, 6, 5
    x, states = make(B, I), [make(B, H) for _ in kind.cell_states]
    w_ih, w_hh, b_ih, b_hh = (t.float() for t in gated_weights(make, I, H, kind.gates))
    x[1, 2] = value
    w_ih = w_ih.abs()  # every gate of row 1 sees +value (an inf times a mixed-sign row would be NaN)
    out = kind.cell(x, *states, w_ih, w_hh, b_ih, b_hh)
    ref = kind.cell_ref(x.double(), *(s.double() for s in states), *(t.double() for t in (w_ih, w_hh, b_ih, b_hh)))
    for o, r in zip(out if isinstance(out, tuple) else (out,), ref if isinstance(ref, tuple) else (ref,)):
        torch.testing.assert_close(o, r.float(), equal_nan=True, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", dtype_params())
@pytest.mark.parametrize("kind", kind_params())
def test_outputs_fully_written(kind, dtype, make):
    """Outputs are fresh allocations; heap chunks of their sizes are filled with
    NaN bytes first, so any element a kernel forgets to write shows up."""
    T, B, I, H = 9, 5, 13, 67
    G = kind.gates
    x = make(T, B, I, dtype=dtype, requires_grad=True)
    states = [make(B, H, dtype=dtype, requires_grad=True) for _ in kind.states]
    ws = [t.to(dtype).requires_grad_() for t in gated_weights(make, I, H, G)]
    cots = [make(T, B, H, dtype=dtype)] + [make(B, H, dtype=dtype) for _ in kind.states]
    shapes = [(T, B, H), (B, H), (T, B, I), (G * H, I), (G * H, H), (G * H,), (T, B, 4 * H), (B, 4 * H)]
    sizes = [nbytes(s, d) for s in shapes for d in (dtype, torch.float32)]
    poison_heap(*sizes)
    outs = kind.seq(x, *states, *ws)
    poison_heap(*sizes)
    grads = torch.autograd.grad(outs, [x, *states, *ws], cots)
    inputs = dict(x=x, **dict(zip(kind.states, states)), w_ih=ws[0], w_hh=ws[1], b_ih=ws[2], b_hh=ws[3])
    ref_outs, ref_grads = fwd_bwd(kind.seq_ref, inputs, cots, dtype=torch.float64)
    tol = 2e-2 if dtype in (torch.float16, torch.bfloat16) else (FP32_RTOL if dtype == torch.float32 else FP64_RTOL)
    for t in (*outs, *grads):
        assert torch.isfinite(t).all()
    for got, ref in zip(outs, ref_outs):
        assert rel_err(got, ref) <= tol
    for got, name in zip(grads, inputs):
        assert rel_err(got, ref_grads[name]) <= tol, name


@pytest.mark.parametrize("dtype", dtype_params([torch.float32, torch.bfloat16]))
@pytest.mark.parametrize("kind", kind_params())
def test_deterministic(kind, dtype, make):
    T, B, I, H = 20, 6, 30, 50
    x = make(T, B, I, dtype=dtype, requires_grad=True)
    states = [make(B, H, dtype=dtype, requires_grad=True) for _ in kind.states]
    ws = [t.to(dtype).requires_grad_() for t in gated_weights(make, I, H, kind.gates)]
    cots = [make(T, B, H, dtype=dtype)] + [make(B, H, dtype=dtype) for _ in kind.states]
    runs = []
    for _ in range(2):
        outs = kind.seq(x, *states, *ws)
        runs.append((*outs, *torch.autograd.grad(outs, [x, *states, *ws], cots)))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kind", kind_params())
def test_thread_count_does_not_change_result(kind, make):
    """Our kernels split the hidden units, never a sum, so 1 or 2 threads give
    the same numbers (to rounding: the large products are ATen's). The shape
    is large enough (> 2M multiply-adds per step) to split."""
    T, B, I, H = 4, 48, 20, 130
    assert B * kind.gates * H * H > 1 << 21
    x, states = make(T, B, I), [make(B, H) for _ in kind.states]
    w = [t.float() for t in gated_weights(make, I, H, kind.gates)]
    cots = [make(T, B, H)] + [make(B, H) for _ in kind.states]

    def run():
        leaves = [t.clone().requires_grad_() for t in (x, *states, *w)]
        outs = kind.seq(*leaves)
        cell = kind.cell(leaves[0][0], *leaves[1:])
        return [*outs, *torch.autograd.grad(outs, leaves, cots), *(cell if isinstance(cell, tuple) else (cell,))]

    torch.set_num_threads(2)  # the one_thread fixture restores the count afterwards
    many = run()
    torch.set_num_threads(1)
    one = run()
    for a, b in zip(many, one):
        assert rel_err(a, b) <= 1e-6


# Widths around the 16-unit chunks and 8-wide vectors, batches on both sides of
# the parallel threshold; fp32 both ways, sequence and cell.
@pytest.mark.parametrize("H", [1, 3, 8, 9, 16, 17, 33, 130])
@pytest.mark.parametrize("B", [1, 40])
@pytest.mark.parametrize("kind", kind_params())
def test_width_sweep(kind, B, H, make):
    I = H + 5
    w = dict(zip(("w_ih", "w_hh", "b_ih", "b_hh"), gated_weights(make, I, H, kind.gates)))
    inputs = dict(x=make(4, B, I), **state_tensors(make, kind, (B, H)), **w)
    check_against_reference(kind.seq, kind.seq_ref, inputs, torch.float32, make, out_names=kind.seq_outputs)
    cell_inputs = dict(x=make(B, I), **{n: make(B, H) for n in kind.cell_states}, **w)
    check_against_reference(kind.cell, kind.cell_ref, cell_inputs, torch.float32, make,
                            out_names=kind.cell_states)


def test_cell_unrolled_equals_sequence(make):
    """An autoregressive loop of cell steps reproduces the sequence op (both kinds)."""
    T, B, I, H = 9, 2, 5, 8
    for kind in (LSTM, GRU):
        x = make(T, B, I, dtype=torch.float64)
        states = [make(B, H, dtype=torch.float64) for _ in kind.states]
        w = gated_weights(make, I, H, kind.gates)
        seq_out = kind.seq(x, *states, *w)
        cur, hs = tuple(states), []
        for t in range(T):
            step = kind.cell(x[t], *cur, *w)
            cur = step if isinstance(step, tuple) else (step,)
            hs.append(cur[0])
        assert rel_err(torch.stack(hs), seq_out[0]) <= FP64_RTOL
        for a, b in zip(cur, seq_out[1:]):
            assert rel_err(a, b) <= FP64_RTOL


@pytest.mark.parametrize("dtype", dtype_params([torch.float32, torch.float64, torch.bfloat16]))
def test_fake_kernels_on_meta_tensors(dtype):
    """Shapes and dtypes of every op's fake kernel; workspaces in the compute dtype."""
    ops = torch.ops.fusedseq
    T, B, I, H = 5, 3, 4, 6
    cdt = torch.float64 if dtype == torch.float64 else torch.float32

    def meta(*shape, dt=dtype):
        return torch.empty(*shape, device="meta", dtype=dt)

    x, xs, h = meta(B, I), meta(T, B, I), meta(B, H)
    w_ih, w_hh = meta(4 * H, I), meta(4 * H, H)
    h1, c1, g = ops.lstm_cell(x, h, h, w_ih, w_hh, None, None)
    assert h1.shape == c1.shape == (B, H) and h1.dtype == dtype and g.shape == (B, 4 * H) and g.dtype == cdt
    grads = ops.lstm_cell_backward(h1, c1, g, x, h, h, w_ih, w_hh)
    assert [t.shape for t in grads] == [(B, I), (B, H), (B, H), (4 * H, I), (4 * H, H), (4 * H,)]
    out, cs, g = ops.lstm(xs, h, h, w_ih, w_hh, None, None)
    assert out.shape == cs.shape == (T, B, H) and g.shape == (T, B, 4 * H) and (cs.dtype, g.dtype) == (cdt, cdt)
    grads = ops.lstm_backward(out, cs, out, cs, g, xs, h, h, w_ih, w_hh)
    assert [t.shape for t in grads] == [(T, B, I), (B, H), (B, H), (4 * H, I), (4 * H, H), (4 * H,)]
    w_ih, w_hh = meta(3 * H, I), meta(3 * H, H)
    h1, g = ops.gru_cell(x, h, w_ih, w_hh, None, None)
    assert h1.shape == (B, H) and g.shape == (B, 4 * H) and g.dtype == cdt
    grads = ops.gru_cell_backward(h1, g, x, h, w_ih, w_hh)
    assert [t.shape for t in grads] == [(B, I), (B, H), (3 * H, I), (3 * H, H), (3 * H,), (3 * H,)]
    out, g = ops.gru(xs, h, w_ih, w_hh, None, None)
    assert out.shape == (T, B, H) and out.dtype == dtype and g.shape == (T, B, 4 * H) and g.dtype == cdt
    grads = ops.gru_backward(out, out, g, xs, h, w_ih, w_hh)
    assert [t.shape for t in grads] == [(T, B, I), (B, H), (3 * H, I), (3 * H, H), (3 * H,), (3 * H,)]


@pytest.mark.parametrize("op", ["rnn", "lstm", "gru"])
def test_inputs_offset_into_their_storage(op, make):
    """Contiguous inputs that start inside a larger buffer (storage_offset > 0):
    the bindings' views must start where the tensor does (a view that added
    the offset twice once read the wrong memory here)."""
    T, B, I, H = 5, 3, 4, 6
    G = {"rnn": 1, "lstm": 4, "gru": 3}[op]
    x = make(T + 2, B, I, dtype=torch.float64)[2:]
    states = [make(B + 1, H, dtype=torch.float64)[1:] for _ in range(2 if op == "lstm" else 1)]
    w = [make(G * H + 1, n, dtype=torch.float64)[1:] for n in (I, H)] + [make(G * H + 3, dtype=torch.float64)[3:]
                                                                       for _ in range(2)]
    assert x.is_contiguous() and x.storage_offset() > 0 and all(t.storage_offset() > 0 for t in (*states, *w))
    fused = {"rnn": lambda x, h, *w: fusedseq.rnn(x, h, *w),
             "lstm": lambda x, h, c, *w: LSTM.seq(x, h, c, *w), "gru": lambda x, h, *w: GRU.seq(x, h, *w)}[op]
    ref = {"rnn": lambda x, h, *w: fusedseq.reference.rnn(x, h, *w),
           "lstm": lambda x, h, c, *w: LSTM.seq_ref(x, h, c, *w), "gru": lambda x, h, *w: GRU.seq_ref(x, h, *w)}[op]
    inputs = [x, *states, *w]
    cots = [make(T, B, H, dtype=torch.float64)] + [make(B, H, dtype=torch.float64) for _ in states]
    results = []
    for fn in (fused, ref):
        leaves = [t.detach().clone().requires_grad_() if fn is ref else t.detach().requires_grad_() for t in inputs]
        outs = fn(*leaves)
        results.append([*outs, *torch.autograd.grad(outs, leaves, cots)])
    for a, b in zip(*results):
        assert rel_err(a, b) <= FP64_RTOL
