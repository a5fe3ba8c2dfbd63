"""SPEC §5 for the LSTM and GRU ops: bad input gets a clear exception naming
the argument, raised before any kernel runs (ValueError for shapes and
values, TypeError for dtypes, devices and layouts), through the public
function and through the raw op alike."""
from __future__ import annotations

import pytest
import torch

import fusedseq

from test_bad_input import _arg, _int, _t

ops = torch.ops.fusedseq
B, I, H, T = 3, 4, 5, 6
F64, BF16 = torch.float64, torch.bfloat16


def lstm_args(**over):
    a = dict(x=_t(T, B, I), h0=_t(B, H), c0=_t(B, H), w_ih=_t(4 * H, I), w_hh=_t(4 * H, H), b_ih=_t(4 * H),
             b_hh=_t(4 * H))
    a.update(over)
    return a


def gru_args(**over):
    a = dict(x=_t(T, B, I), h0=_t(B, H), w_ih=_t(3 * H, I), w_hh=_t(3 * H, H), b_ih=_t(3 * H), b_hh=_t(3 * H))
    a.update(over)
    return a


def _cell(a):
    """Sequence arguments -> the cell's: x at one step, h/c for h0/c0."""
    c = {("h" if k == "h0" else "c" if k == "c0" else k): v for k, v in a.items()}
    c["x"] = c["x"][0] if isinstance(c["x"], torch.Tensor) and c["x"].dim() == 3 else c["x"]
    return c


def call(kind: str, cell: bool, entry: str, a: dict):
    w = (a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"])
    if kind == "lstm":
        if cell:
            c = _cell(a)
            if entry == "public":
                return fusedseq.lstm_cell(c["x"], (c["h"], c["c"]), *w)
            return ops.lstm_cell(c["x"], c["h"], c["c"], *w)
        if entry == "public":
            return fusedseq.lstm(a["x"], (a["h0"], a["c0"]), *w)
        return ops.lstm(a["x"], a["h0"], a["c0"], *w)
    if cell:
        c = _cell(a)
        return (fusedseq.gru_cell if entry == "public" else ops.gru_cell)(c["x"], c["h"], *w)
    return (fusedseq.gru if entry == "public" else ops.gru)(a["x"], a["h0"], *w)


# (id, kind, overrides of the sequence's arguments, exception, argument named).
# The cell runs the same overrides with x at one step and h/c for h0/c0.
BAD = [
    # dtypes
    ("x_int", "both", dict(x=_int(T, B, I)), TypeError, "x"),
    ("h0_f64", "both", dict(h0=_t(B, H, dtype=F64)), TypeError, "h"),
    ("c0_bf16", "lstm", dict(c0=_t(B, H, dtype=BF16)), TypeError, "c"),
    ("w_ih_f64", "both", dict(w_ih=None), TypeError, "w_ih"),   # filled per kind below
    ("w_hh_int", "both", dict(w_hh=None), TypeError, "w_hh"),
    ("b_ih_f16", "both", dict(b_ih=None), TypeError, "b_ih"),
    # the gate-row count: 4H for the LSTM, 3H for the GRU
    ("w_ih_rows", "both", dict(w_ih=None), ValueError, "w_ih"),
    ("w_hh_rows", "both", dict(w_hh=None), ValueError, "w_hh"),
    ("w_hh_cols", "both", dict(w_hh=None), ValueError, "w_hh"),
    ("w_ih_cols", "both", dict(w_ih=None), ValueError, "w_ih"),
    ("b_hh_len", "both", dict(b_hh=None), ValueError, "b_hh"),
    ("b_ih_2d", "both", dict(b_ih=None), ValueError, "b_ih"),
    # mismatched states
    ("h0_batch", "both", dict(h0=_t(B + 1, H)), ValueError, "h"),
    ("h0_rank", "both", dict(h0=_t(1, B, H)), ValueError, "h"),
    ("c0_hidden", "lstm", dict(c0=_t(B, H + 1)), ValueError, "c"),
    ("c0_batch", "lstm", dict(c0=_t(B - 1, H)), ValueError, "c"),
    # empty tensors
    ("empty_batch", "both", dict(x=_t(T, 0, I), h0=_t(0, H), c0=_t(0, H)), ValueError, "x"),
    ("empty_input", "both", dict(x=_t(T, B, 0), w_ih=None), ValueError, "x"),
    ("empty_T", "seq", dict(x=_t(0, B, I)), ValueError, "x"),
]


def _fill(case_id: str, G: int, over: dict) -> dict:
    """The overrides that depend on the kind's gate count G."""
    per_kind = {
        "w_ih_f64": dict(w_ih=_t(G * H, I, dtype=F64)),
        "w_hh_int": dict(w_hh=_int(G * H, H)),
        "b_ih_f16": dict(b_ih=_t(G * H, dtype=torch.float16)),
        "w_ih_rows": dict(w_ih=_t((G - 1) * H, I)),     # e.g. an LSTM handed a GRU's weights
        "w_hh_rows": dict(w_hh=_t((G + 1) * H, H)),
        "w_hh_cols": dict(w_hh=_t(G * H, H + 1)),
        "w_ih_cols": dict(w_ih=_t(G * H, I + 2)),
        "b_hh_len": dict(b_hh=_t(G * H - 1)),
        "b_ih_2d": dict(b_ih=_t(G, H)),
        "empty_input": dict(x=_t(T, B, 0), w_ih=_t(G * H, 0)),
    }
    return {**over, **per_kind.get(case_id, {})}


def _cases():
    for case_id, kinds, over, exc, name in BAD:
        for kind in ("lstm", "gru"):
            if kinds not in ("both", "seq", kind):
                continue
            for cell in (False, True):
                if kinds == "seq" and cell:
                    continue
                yield pytest.param(kind, cell, case_id, over, exc, name,
                                   id=f"{kind}{'_cell' if cell else ''}-{case_id}")


@pytest.mark.parametrize("entry", ["public", "raw"])
@pytest.mark.parametrize("kind,cell,case_id,over,exc,name", list(_cases()))
def test_bad_input(kind, cell, case_id, over, exc, name, entry):
    G = 4 if kind == "lstm" else 3
    args = (lstm_args if kind == "lstm" else gru_args)(**_fill(case_id, G, over))
    if kind == "gru":
        args.pop("c0", None)
    if not cell:
        name = {"h": "h0", "c": "c0"}.get(name, name)
    with pytest.raises(exc, match=_arg(name)) as info:
        call(kind, cell, entry, args)
    op = f"fusedseq.{kind}{'_cell' if cell else ''}"
    assert op in str(info.value)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_wrong_gate_count_message(kind):
    """A weight with the wrong number of gate rows: the message spells the
    expected layout and both shapes."""
    G = 4 if kind == "lstm" else 3
    with pytest.raises(ValueError) as info:
        call(kind, False, "public", (lstm_args if kind == "lstm" else gru_args)(w_hh=_t((7 - G) * H, H)))
    msg = str(info.value)
    assert f"'w_hh' must have shape ({G}H, H) = ({G * H}, {H})" in msg and f"({(7 - G) * H}, {H})" in msg, msg


def test_lstm_state_must_be_a_pair():
    with pytest.raises(TypeError, match="argument 'state' must be a pair"):
        fusedseq.lstm(_t(T, B, I), _t(B, H), _t(4 * H, I), _t(4 * H, H))
    with pytest.raises(TypeError, match="argument 'state' must be a pair"):
        fusedseq.lstm_cell(_t(B, I), (_t(B, H),), _t(4 * H, I), _t(4 * H, H))


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_unbatched_x_with_batched_state(kind):
    a = (lstm_args if kind == "lstm" else gru_args)(x=_t(T, I))
    with pytest.raises(ValueError, match=_arg("h0")):
        call(kind, False, "public", a)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_sparse_layout_names_the_argument(kind):
    with pytest.raises(TypeError, match=_arg("w_hh")):
        call(kind, False, "public", (lstm_args if kind == "lstm" else gru_args)(
            w_hh=_t((4 if kind == "lstm" else 3) * H, H).to_sparse()))


# ------------------------------------------------------------ backward ops --
def _lstm_bwd(**over):
    x, h0, c0 = _t(T, B, I), _t(B, H), _t(B, H)
    w_ih, w_hh = _t(4 * H, I), _t(4 * H, H)
    output, cell_states, gates = ops.lstm(x, h0, c0, w_ih, w_hh, None, None)
    a = dict(grad_output=_t(T, B, H), grad_cell_states=_t(T, B, H), output=output, cell_states=cell_states,
             gates=gates, x=x, h0=h0, c0=c0, w_ih=w_ih, w_hh=w_hh)
    a.update(over)
    return lambda: ops.lstm_backward(*a.values())


def _gru_bwd(**over):
    x, h0, w_ih, w_hh = _t(T, B, I), _t(B, H), _t(3 * H, I), _t(3 * H, H)
    output, gates = ops.gru(x, h0, w_ih, w_hh, None, None)
    a = dict(grad_output=_t(T, B, H), output=output, gates=gates, x=x, h0=h0, w_ih=w_ih, w_hh=w_hh)
    a.update(over)
    return lambda: ops.gru_backward(*a.values())


def _lstm_cell_bwd(**over):
    x, h, c, w_ih, w_hh = _t(B, I), _t(B, H), _t(B, H), _t(4 * H, I), _t(4 * H, H)
    _, _, gates = ops.lstm_cell(x, h, c, w_ih, w_hh, None, None)
    a = dict(grad_h_next=_t(B, H), grad_c_next=_t(B, H), gates=gates, x=x, h=h, c=c, w_ih=w_ih, w_hh=w_hh)
    a.update(over)
    return lambda: ops.lstm_cell_backward(*a.values())


def _gru_cell_bwd(**over):
    x, h, w_ih, w_hh = _t(B, I), _t(B, H), _t(3 * H, I), _t(3 * H, H)
    _, gates = ops.gru_cell(x, h, w_ih, w_hh, None, None)
    a = dict(grad_h_next=_t(B, H), gates=gates, x=x, h=h, w_ih=w_ih, w_hh=w_hh)
    a.update(over)
    return lambda: ops.gru_cell_backward(*a.values())


BWD_BAD = [
    ("lstm_gates_bf16", _lstm_bwd, dict(gates=_t(T, B, 4 * H, dtype=BF16)), TypeError, "gates"),
    ("lstm_gates_rows", _lstm_bwd, dict(gates=_t(T, B, 3 * H)), ValueError, "gates"),
    ("lstm_cell_states_f64", _lstm_bwd, dict(cell_states=_t(T, B, H, dtype=F64)), TypeError, "cell_states"),
    ("lstm_grad_cell_states_T", _lstm_bwd, dict(grad_cell_states=_t(T - 1, B, H)), ValueError, "grad_cell_states"),
    ("lstm_grad_output_shape", _lstm_bwd, dict(grad_output=_t(T, B, H + 1)), ValueError, "grad_output"),
    ("lstm_output_dtype", _lstm_bwd, dict(output=_t(T, B, H, dtype=F64)), TypeError, "output"),
    ("lstm_c0_shape", _lstm_bwd, dict(c0=_t(B, H + 1)), ValueError, "c0"),
    ("lstm_w_hh_rows", _lstm_bwd, dict(w_hh=_t(3 * H, H)), ValueError, "w_hh"),
    ("gru_gates_rows", _gru_bwd, dict(gates=_t(T, B, 3 * H)), ValueError, "gates"),
    ("gru_gates_int", _gru_bwd, dict(gates=_int(T, B, 4 * H)), TypeError, "gates"),
    ("gru_output_T", _gru_bwd, dict(output=_t(T + 1, B, H)), ValueError, "output"),
    ("gru_w_ih_rows", _gru_bwd, dict(w_ih=_t(4 * H, I)), ValueError, "w_ih"),
    ("lstm_cell_gates_shape", _lstm_cell_bwd, dict(gates=_t(B, 4 * H + 1)), ValueError, "gates"),
    ("lstm_cell_grad_c_next", _lstm_cell_bwd, dict(grad_c_next=_t(B, H, dtype=F64)), TypeError, "grad_c_next"),
    ("lstm_cell_c_batch", _lstm_cell_bwd, dict(c=_t(B + 1, H)), ValueError, "c"),
    ("gru_cell_gates_f64", _gru_cell_bwd, dict(gates=_t(B, 4 * H, dtype=F64)), TypeError, "gates"),
    ("gru_cell_grad_h_next", _gru_cell_bwd, dict(grad_h_next=_t(B + 1, H)), ValueError, "grad_h_next"),
]


@pytest.mark.parametrize("case", BWD_BAD, ids=[c[0] for c in BWD_BAD])
def test_backward_bad_input(case):
    _, make_call, over, exc, name = case
    with pytest.raises(exc, match=_arg(name)):
        make_call(**over)()


needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device available")


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("kind,cell", [("lstm", False), ("lstm", True), ("gru", False), ("gru", True)])
def test_cuda_without_kernel_is_not_implemented(kind, cell):
    """Until these ops have CUDA kernels, CUDA tensors get a clear
    NotImplementedError naming the op: the public function, the raw forward
    op and the raw backward op alike."""
    from _gated import GRU, LSTM
    from conftest import Maker, cuda_skip_reason
    from test_lstm_gru import _backward_args
    op = kind + ("_cell" if cell else "")
    if cuda_skip_reason([op, op + "_backward"]) is None:
        pytest.skip(f"{op} has CUDA kernels in this build")
    a = lstm_args() if kind == "lstm" else gru_args()
    on_gpu = {k: v.cuda() for k, v in a.items()}
    for entry in ("public", "raw"):
        with pytest.raises(NotImplementedError, match=f"fusedseq.{op}: .*no CUDA kernel"):
            call(kind, cell, entry, on_gpu)
    # the backward op on its own, handed what the CPU forward returned
    c = _cell(a) if cell else a
    x, states = c["x"], [c[n] for n in (("h", "c") if cell else ("h0", "c0")) if n in c]
    outs = call(kind, cell, "raw", a)
    args = _backward_args(Maker(0), LSTM if kind == "lstm" else GRU, cell, x, states, c["w_ih"], c["w_hh"], outs)
    with pytest.raises(NotImplementedError, match=f"fusedseq.{op}_backward: .*no CUDA kernel"):
        getattr(ops, op + "_backward")(*(t.cuda() for t in args))


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("cell", [False, True], ids=["sequence", "cell"])
@pytest.mark.parametrize("name,value", [("x", [[1.0]]), ("w_ih", None), ("w_hh", "weights"), ("b_ih", 3.0),
                                        ("h", [0.0])])
def test_wrong_kind_of_argument_is_a_type_error(kind, cell, name, value):
    """A list, None, a string or a number where a tensor (or None) goes: a
    TypeError naming the argument, from the public function."""
    a = (lstm_args if kind == "lstm" else gru_args)()
    a["h0" if name == "h" else name] = value
    if kind == "gru":
        a.pop("c0", None)
    shown = name if (cell or name != "h") else "h0"
    with pytest.raises(TypeError, match=_arg(shown)):
        call(kind, cell, "public", a)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_batch_first_must_be_a_bool(kind):
    a = (lstm_args if kind == "lstm" else gru_args)()
    fn = fusedseq.lstm if kind == "lstm" else fusedseq.gru
    args = (a["x"], (a["h0"], a["c0"])) if kind == "lstm" else (a["x"], a["h0"])
    with pytest.raises(TypeError, match=_arg("batch_first")):
        fn(*args, a["w_ih"], a["w_hh"], batch_first="yes")
