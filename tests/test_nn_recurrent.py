"""fusedseq.nn.RNN / LSTM / GRU and their cells: drop-ins for torch's.

Each check builds the torch module, loads its state dict into ours unchanged
and compares outputs, final states and every gradient. In float64 the two
differ only by summation order (≤ 1e-12 norm-wise); float32 within 1e-5;
bfloat16 within 2x PyTorch's own bfloat16 error against the float64 result.
"""
from __future__ import annotations

import functools

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from fusedseq.nn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

from conftest import FP32_RTOL, FP64_RTOL, LOWP_FACTOR, LOWP_FLOOR, Maker, rel_err

# One thread (conftest.one_thread): the ops' results do not depend on it
# (test_lstm_gru.py and test_rnn*.py compare one and two threads).
pytestmark = pytest.mark.usefixtures("one_thread")


def _kinds(pairs):
    """(ours, torch's) class pairs as params; the Elman ones in both activations."""
    params = []
    for ours, theirs in pairs:
        if ours in (RNN, RNNCell):
            for nl in ("tanh", "relu"):
                params.append(pytest.param((functools.partial(ours, nonlinearity=nl),
                                            functools.partial(theirs, nonlinearity=nl)), id=f"rnn_{nl}"))
        else:
            params.append(pytest.param((ours, theirs), id=ours.__name__.lower().removesuffix("cell")))
    return params


KINDS = _kinds([(RNN, torch.nn.RNN), (LSTM, torch.nn.LSTM), (GRU, torch.nn.GRU)])
CELLS = _kinds([(RNNCell, torch.nn.RNNCell), (LSTMCell, torch.nn.LSTMCell), (GRUCell, torch.nn.GRUCell)])

# (id, num_layers, bidirectional, batch_first, bias)
CONFIGS = [
    ("1layer", 1, False, False, True),
    ("1layer_nobias_bf", 1, False, True, False),
    ("2layer_bidir", 2, True, False, True),
    ("3layer_bidir_bf", 3, True, True, True),
]


def pair(make: Maker, kinds, I, H, L, bidir, bf, bias, dtype, **kw):
    """torch's module with fresh random weights, and ours loaded from its state dict."""
    ours_cls, torch_cls = kinds
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=make.gen)))
    ref = torch_cls(I, H, num_layers=L, bias=bias, batch_first=bf, bidirectional=bidir, **kw).to(dtype)
    ours = ours_cls(I, H, num_layers=L, bias=bias, batch_first=bf, bidirectional=bidir, **kw).to(dtype)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def is_lstm(module) -> bool:
    return isinstance(module, (LSTM, torch.nn.LSTM))


def states(make: Maker, module, shape, dtype):
    """hx for a module: a tensor, or an (h, c) pair for an LSTM."""
    if is_lstm(module):
        return make(*shape, dtype=dtype), make(*shape, dtype=dtype)
    return make(*shape, dtype=dtype)


def as_tuple(hx):
    return hx if isinstance(hx, tuple) else (hx,)


def outputs_and_grads(module, x, hx, cots):
    """module(x, hx) -> [output, *final states, dx, *dhx, d(every parameter)]."""
    x = x.detach().clone().requires_grad_()
    hx_leaves = tuple(h.detach().clone().requires_grad_() for h in as_tuple(hx))
    out, h_n = module(x, hx_leaves if is_lstm(module) else hx_leaves[0])
    finals = as_tuple(h_n)
    grads = torch.autograd.grad([out, *finals], [x, *hx_leaves, *module.parameters()], cots)
    return [out, *finals, *grads]


@pytest.mark.parametrize("cfg", CONFIGS, ids=[c[0] for c in CONFIGS])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("kinds", KINDS)
def test_matches_torch(make, kinds, cfg, dtype):
    _, L, bidir, bf, bias = cfg
    T, B, I, H = 7, 3, 5, 9
    D = 2 if bidir else 1
    ref, ours = pair(make, kinds, I, H, L, bidir, bf, bias, dtype)
    x = make(B, T, I, dtype=dtype) if bf else make(T, B, I, dtype=dtype)
    hx = states(make, ours, (L * D, B, H), dtype)
    cots = [make(*x.shape[:2], D * H, dtype=dtype)] + [make(L * D, B, H, dtype=dtype) for _ in as_tuple(hx)]
    tol = FP64_RTOL if dtype == torch.float64 else FP32_RTOL
    names = ["output"] + ["h_n", "c_n"][:len(as_tuple(hx))] + ["dx"] + ["dh0", "dc0"][:len(as_tuple(hx))] \
        + [n for n, _ in ours.named_parameters()]
    for name, a, b in zip(names, outputs_and_grads(ours, x, hx, cots), outputs_and_grads(ref, x, hx, cots)):
        assert a.shape == b.shape, name
        assert rel_err(a, b) <= tol, f"{name}: {rel_err(a, b):.3g}"


@pytest.mark.parametrize("kinds", KINDS)
def test_bf16_no_worse_than_torch(make, kinds):
    """In bfloat16 our error against the float64 result is within 2x torch's own."""
    T, B, I, H, L = 12, 4, 16, 32, 2
    ref64, _ = pair(make, kinds, I, H, L, True, False, True, torch.float64)
    ours = kinds[0](I, H, num_layers=L, bidirectional=True).to(torch.bfloat16)
    ours.load_state_dict(ref64.state_dict())
    ref16 = kinds[1](I, H, num_layers=L, bidirectional=True).to(torch.bfloat16)
    ref16.load_state_dict(ref64.state_dict())
    x = make(T, B, I, dtype=torch.bfloat16)
    exact = ref64(x.double())
    got, theirs = ours(x), ref16(x)
    assert got[0].dtype == torch.bfloat16
    for a, b, e in zip([got[0], *as_tuple(got[1])], [theirs[0], *as_tuple(theirs[1])],
                       [exact[0], *as_tuple(exact[1])]):
        assert rel_err(a, e) <= LOWP_FACTOR * rel_err(b, e) + LOWP_FLOOR


@pytest.mark.parametrize("bf", [False, True], ids=["seq_first", "batch_first"])
@pytest.mark.parametrize("kinds", KINDS)
def test_unbatched_and_default_hx(make, kinds, bf):
    ref, ours = pair(make, kinds, 4, 6, 2, True, bf, True, torch.float64)
    x = make(5, 4, dtype=torch.float64)
    for args in [(x,), (x, states(make, ours, (4, 6), torch.float64))]:
        (o1, h1), (o2, h2) = ours(*args), ref(*args)
        assert o1.shape == o2.shape == (5, 12) and rel_err(o1, o2) <= FP64_RTOL
        for a, b in zip(as_tuple(h1), as_tuple(h2)):
            assert a.shape == b.shape == (4, 6) and rel_err(a, b) <= FP64_RTOL


@pytest.mark.parametrize("cfg", CONFIGS[1:], ids=[c[0] for c in CONFIGS[1:]])
@pytest.mark.parametrize("kinds", KINDS)
def test_packed_sequence(make, kinds, cfg):
    """Variable lengths, unsorted batch: same packed output, final states (an
    LSTM's c_n too, at each sequence's own length) and gradients."""
    _, L, bidir, bf, bias = cfg
    T, B, I, H = 6, 4, 5, 7
    D = 2 if bidir else 1
    ref, ours = pair(make, kinds, I, H, L, bidir, bf, bias, torch.float64)
    lengths = torch.tensor([3, 6, 1, 4])
    padded = make(B, T, I, dtype=torch.float64) if bf else make(T, B, I, dtype=torch.float64)
    hx = states(make, ours, (L * D, B, H), torch.float64)
    results = []
    for module in (ours, ref):
        x = padded.clone().requires_grad_()
        packed = pack_padded_sequence(x, lengths, batch_first=bf, enforce_sorted=False)
        out, h_n = module(packed, hx)
        assert isinstance(out, type(packed))
        unpacked, out_lengths = pad_packed_sequence(out, batch_first=bf)
        assert torch.equal(out_lengths, lengths)
        weights = torch.linspace(-1, 1, unpacked.numel(), dtype=torch.float64).view_as(unpacked)
        loss = (unpacked * weights).sum() + sum((h ** 2).sum() * (k + 1) for k, h in enumerate(as_tuple(h_n)))
        results.append([out.data, *as_tuple(h_n), *torch.autograd.grad(loss, [x, *module.parameters()])])
        assert torch.equal(out.batch_sizes, packed.batch_sizes)
        assert torch.equal(out.sorted_indices, packed.sorted_indices)
    for a, b in zip(*results):
        assert rel_err(a, b) <= FP64_RTOL


@pytest.mark.parametrize("kinds", KINDS)
def test_is_a_drop_in(make, kinds):
    """Same parameter names and shapes, the same initial weights for the same
    seed; a torch state dict loads unchanged; the backend is switchable and
    both agree."""
    ours_cls, torch_cls = kinds
    torch.manual_seed(11)
    ref = torch_cls(3, 5, num_layers=2, bidirectional=True, batch_first=True, dropout=0.25)
    torch.manual_seed(11)
    ours = ours_cls(3, 5, num_layers=2, bidirectional=True, batch_first=True, dropout=0.25)
    assert isinstance(ours, torch.nn.RNNBase) and type(ours).__name__ == type(ref).__name__
    assert not isinstance(ours, (torch.nn.RNN, torch.nn.LSTM, torch.nn.GRU))  # Dynamo would refuse it
    assert [(n, p.shape) for n, p in ours.named_parameters()] == [(n, p.shape) for n, p in ref.named_parameters()]
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), ref.parameters()))
    result = ours.load_state_dict(ref.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert "backend='fused'" in repr(ours)
    ours.eval()
    x = make(2, 4, 3)
    fused = ours(x)
    ours.backend = "reference"
    assert "backend='reference'" in repr(ours)
    reference = ours(x)
    assert rel_err(fused[0], reference[0]) <= FP32_RTOL
    for a, b in zip(as_tuple(fused[1]), as_tuple(reference[1])):
        assert rel_err(a, b) <= FP32_RTOL
    ours.backend = "bogus"
    with pytest.raises(ValueError, match="backend must be one of"):
        ours(x)
    with pytest.raises(ValueError, match="backend must be one of"):
        ours_cls(3, 5, backend="cudnn")


@pytest.mark.parametrize("kinds", KINDS)
def test_dropout_between_layers(make, kinds):
    """Train mode drops activations between layers; eval mode equals torch's."""
    torch.manual_seed(1)
    ours = kinds[0](8, 64, num_layers=2, dropout=0.5).double()
    ref = kinds[1](8, 64, num_layers=2, dropout=0.5).double()
    ref.load_state_dict(ours.state_dict())
    x = make(5, 3, 8, dtype=torch.float64)
    ours.eval(), ref.eval()
    assert rel_err(ours(x)[0], ref(x)[0]) <= FP64_RTOL
    ours.train()
    torch.manual_seed(7)
    a = ours(x)[0]
    torch.manual_seed(7)
    b = ours(x)[0]
    assert torch.equal(a, b)                       # seeded: reproducible
    assert rel_err(a, ref(x)[0]) > 1e-3           # and really dropped


@pytest.mark.parametrize("kinds", KINDS)
def test_bad_input_same_errors_as_torch(make, kinds):
    """Size mismatches raise exactly what torch's module raises."""
    ref, ours = pair(make, kinds, 4, 6, 2, False, False, True, torch.float32)
    lstm = is_lstm(ours)

    def hx(*shape, c_shape=None):
        return (make(*shape), make(*(c_shape or shape))) if lstm else make(*shape)

    bad = [
        (make(5, 3, 7), None),                  # wrong input_size
        (make(5, 3, 4), hx(1, 3, 6)),          # hx: wrong num_layers
        (make(5, 3, 4), hx(2, 2, 6)),          # hx: wrong batch
        (make(5, 3, 4), hx(2, 3, 5)),          # hx: wrong hidden size
    ]
    if lstm:
        bad.append((make(5, 3, 4), hx(2, 3, 6, c_shape=(2, 3, 7))))  # c0 alone wrong
    for x, h in bad:
        with pytest.raises(RuntimeError) as theirs:
            ref(x, h)
        with pytest.raises(RuntimeError) as got:
            ours(x, h)
        assert str(got.value) == str(theirs.value)
    with pytest.raises(ValueError, match="2D or 3D"):
        ours(make(2, 5, 3, 4))
    with pytest.raises(ValueError, match="hx should also be 3D"):
        ours(make(5, 3, 4), hx(3, 6))


def test_lstm_hx_must_be_a_pair(make):
    with pytest.raises(TypeError, match=r"pair \(h_0, c_0\)"):
        LSTM(4, 6)(make(5, 3, 4), make(1, 3, 6))


def test_lstm_proj_size(make):
    """proj_size: torch's module runs it (backend='reference'), the fused
    backend refuses it clearly, at construction and at call time."""
    with pytest.raises(NotImplementedError, match="proj_size=3 is not supported by the fused backend"):
        LSTM(4, 6, proj_size=3)
    ref = torch.nn.LSTM(4, 6, proj_size=3, num_layers=2).double()
    ours = LSTM(4, 6, proj_size=3, num_layers=2, backend="reference").double()
    ours.load_state_dict(ref.state_dict())
    x = make(5, 2, 4, dtype=torch.float64)
    (o1, (h1, c1)), (o2, (h2, c2)) = ours(x), ref(x)
    assert o1.shape == (5, 2, 3) and rel_err(o1, o2) <= FP64_RTOL and rel_err(c1, c2) <= FP64_RTOL
    ours.backend = "fused"
    with pytest.raises(NotImplementedError, match="backend='reference'"):
        ours(x)


@pytest.mark.parametrize("kinds", KINDS)
def test_compiles_fullgraph(make, kinds):
    """torch.compile traces the fused path whole (Dynamo refuses nn.LSTM and
    nn.GRU instances, which is why these derive from nn.RNNBase instead)."""
    torch._dynamo.reset()
    model = kinds[0](4, 6, num_layers=2, bidirectional=True, batch_first=True).double()
    x = make(3, 5, 4, dtype=torch.float64, requires_grad=True)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    (o1, s1), (o2, s2) = compiled(x), model(x)
    assert rel_err(o1, o2) <= FP64_RTOL
    for a, b in zip(as_tuple(s1), as_tuple(s2)):
        assert rel_err(a, b) <= FP64_RTOL
    g1 = torch.autograd.grad(o1.sum() + as_tuple(s1)[-1].sum(), x)[0]
    g2 = torch.autograd.grad(o2.sum() + as_tuple(s2)[-1].sum(), x)[0]
    assert rel_err(g1, g2) <= FP64_RTOL
    torch._dynamo.reset()


def test_models_share_one_base():
    from fusedseq.nn._recurrent import FusedCell, FusedRNNBase
    assert all(issubclass(c, FusedRNNBase) for c in (RNN, LSTM, GRU))
    assert all(issubclass(c, FusedCell) for c in (RNNCell, LSTMCell, GRUCell))


# --------------------------------------------------------------------- cells --
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("cells", CELLS)
def test_cell_matches_torch(make, cells, dtype, bias):
    ours_cls, torch_cls = cells
    torch.manual_seed(3)
    ref = torch_cls(6, 11, bias=bias).to(dtype)
    ours = ours_cls(6, 11, bias=bias).to(dtype)
    assert isinstance(ours, type(ref))
    ours.load_state_dict(ref.state_dict())
    tol = FP64_RTOL if dtype == torch.float64 else FP32_RTOL
    lstm = isinstance(ours, LSTMCell)
    for shape_x, shape_h in [((4, 6), (4, 11)), ((6,), (11,))]:
        x = make(*shape_x, dtype=dtype)
        hx = tuple(make(*shape_h, dtype=dtype) for _ in range(2 if lstm else 1))
        cots = [make(*shape_h, dtype=dtype) for _ in hx]
        res = []
        for m in (ours, ref):
            xx = x.clone().requires_grad_()
            hh = tuple(h.clone().requires_grad_() for h in hx)
            out = as_tuple(m(xx, hh if lstm else hh[0]))
            res.append([*out, *torch.autograd.grad(out, [xx, *hh, *m.parameters()], cots)])
        for a, b in zip(*res):
            assert a.shape == b.shape and rel_err(a, b) <= tol
        for a, b in zip(as_tuple(ours(x)), as_tuple(ref(x))):  # hx=None means zeros
            assert rel_err(a, b) <= tol
    assert "backend='fused'" in repr(ours)


@pytest.mark.parametrize("kinds,cells", [(k.values[0], c.values[0]) for k, c in zip(KINDS, CELLS)],
                         ids=[k.id for k in KINDS])
def test_cell_unrolled_equals_sequence(make, kinds, cells):
    """An autoregressive loop of cell steps reproduces the model over the sequence."""
    cell = cells[0](5, 8).double()
    seq = kinds[0](5, 8).double()
    seq.load_state_dict({k + "_l0": v for k, v in cell.state_dict().items()})
    lstm = isinstance(cell, LSTMCell)
    x = make(9, 2, 5, dtype=torch.float64)
    hx = tuple(make(2, 8, dtype=torch.float64) for _ in range(2 if lstm else 1))
    state, hs = hx, []
    for t in range(9):
        state = as_tuple(cell(x[t], state if lstm else state[0]))
        hs.append(state[0])
    out, h_n = seq(x, tuple(h.unsqueeze(0) for h in hx) if lstm else hx[0].unsqueeze(0))
    assert rel_err(torch.stack(hs), out) <= FP64_RTOL
    for a, b in zip(state, as_tuple(h_n)):
        assert rel_err(a, b[0]) <= FP64_RTOL


@pytest.mark.parametrize("cells", CELLS)
def test_cell_bad_input(make, cells):
    ours_cls, _ = cells
    cell = ours_cls(5, 8)
    lstm = isinstance(cell, LSTMCell)

    def hx(*shape):
        return (make(*shape), make(*shape)) if lstm else make(*shape)

    with pytest.raises(ValueError, match="1D or 2D"):
        cell(make(2, 3, 5))
    with pytest.raises(ValueError, match="to be 2D"):
        cell(make(3, 5), hx(8))
    with pytest.raises(ValueError, match="w_ih"):
        cell(make(3, 4), hx(3, 8))
    with pytest.raises(ValueError, match="argument 'h'"):
        cell(make(3, 5), hx(4, 8))
    with pytest.raises(ValueError, match="backend must be one of"):
        ours_cls(5, 8, backend="cudnn")
