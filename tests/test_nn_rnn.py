"""fusedseq.nn.RNN / RNNCell: drop-ins for torch.nn.RNN / RNNCell.

Each check builds the torch module, loads its state dict into ours unchanged
and compares outputs and every gradient. In float64 the two differ only by
summation order (≤ 1e-12 norm-wise); float32 within 1e-5; bfloat16 within 2x
PyTorch's own bfloat16 error against the float64 result.
"""
from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from fusedseq.nn import RNN, RNNCell

from conftest import FP32_RTOL, FP64_RTOL, LOWP_FACTOR, LOWP_FLOOR, Maker, rel_err

# (id, num_layers, bidirectional, batch_first, nonlinearity, bias)
CONFIGS = [
    ("1layer_tanh", 1, False, False, "tanh", True),
    ("1layer_relu_nobias", 1, False, True, "relu", False),
    ("2layer_bidir", 2, True, False, "tanh", True),
    ("3layer_bidir_bf_relu", 3, True, True, "relu", True),
    ("2layer_nobias_bf", 2, False, True, "tanh", False),
]


def pair(make: Maker, I, H, L, bidir, bf, nl, bias, dtype):
    """A torch.nn.RNN with fresh random weights and ours loaded from its state dict."""
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=make.gen)))
    ref = torch.nn.RNN(I, H, num_layers=L, nonlinearity=nl, bias=bias, batch_first=bf,
                       bidirectional=bidir).to(dtype)
    ours = RNN(I, H, num_layers=L, nonlinearity=nl, bias=bias, batch_first=bf, bidirectional=bidir).to(dtype)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def outputs_and_grads(module, x, hx, g_out, g_h):
    """Run module(x, hx); return [output, h_n, dx, dhx, d(every parameter)]."""
    x = x.detach().clone().requires_grad_()
    hx = hx.detach().clone().requires_grad_()
    out, h_n = module(x, hx)
    grads = torch.autograd.grad([out, h_n], [x, hx, *module.parameters()], [g_out, g_h])
    return [out, h_n, *grads]


@pytest.mark.parametrize("cfg", CONFIGS, ids=[c[0] for c in CONFIGS])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
def test_rnn_matches_torch(make, cfg, dtype):
    _, L, bidir, bf, nl, bias = cfg
    T, B, I, H = 7, 3, 5, 9
    D = 2 if bidir else 1
    ref, ours = pair(make, I, H, L, bidir, bf, nl, bias, dtype)
    x = make(B, T, I, dtype=dtype) if bf else make(T, B, I, dtype=dtype)
    hx = make(L * D, B, H, dtype=dtype)
    g_out = make(*(x.shape[:2]), D * H, dtype=dtype)
    g_h = make(L * D, B, H, dtype=dtype)
    tol = FP64_RTOL if dtype == torch.float64 else FP32_RTOL
    names = ["output", "h_n", "dx", "dhx"] + [n for n, _ in ours.named_parameters()]
    for name, a, b in zip(names, outputs_and_grads(ours, x, hx, g_out, g_h),
                          outputs_and_grads(ref, x, hx, g_out, g_h)):
        assert a.shape == b.shape, name
        assert rel_err(a, b) <= tol, f"{name}: {rel_err(a, b):.3g}"


def test_rnn_bf16_no_worse_than_torch(make):
    """In bfloat16 our error against the float64 result is within 2x torch's own."""
    T, B, I, H, L = 12, 4, 16, 32, 2
    ref64, _ = pair(make, I, H, L, True, False, "tanh", True, torch.float64)
    ours = RNN(I, H, num_layers=L, bidirectional=True).to(torch.bfloat16)
    ours.load_state_dict(ref64.state_dict())
    ref16 = torch.nn.RNN(I, H, num_layers=L, bidirectional=True).to(torch.bfloat16)
    ref16.load_state_dict(ref64.state_dict())
    x = make(T, B, I, dtype=torch.bfloat16)
    exact, _ = ref64(x.double())
    err_ours = rel_err(ours(x)[0], exact)
    err_torch = rel_err(ref16(x)[0], exact)
    assert ours(x)[0].dtype == torch.bfloat16
    assert err_ours <= LOWP_FACTOR * err_torch + LOWP_FLOOR, (err_ours, err_torch)


@pytest.mark.parametrize("bf", [False, True], ids=["seq_first", "batch_first"])
def test_rnn_unbatched_and_default_hx(make, bf):
    ref, ours = pair(make, 4, 6, 2, True, bf, "tanh", True, torch.float64)
    x = make(5, 4, dtype=torch.float64)
    for args in [(x,), (x, make(4, 6, dtype=torch.float64))]:
        (o1, h1), (o2, h2) = ours(*args), ref(*args)
        assert o1.shape == o2.shape == (5, 12) and h1.shape == h2.shape == (4, 6)
        assert rel_err(o1, o2) <= FP64_RTOL and rel_err(h1, h2) <= FP64_RTOL


@pytest.mark.parametrize("cfg", CONFIGS[1:4], ids=[c[0] for c in CONFIGS[1:4]])
def test_rnn_packed_sequence(make, cfg):
    """Variable lengths, unsorted batch: same packed output, h_n and gradients."""
    _, L, bidir, bf, nl, bias = cfg
    T, B, I, H = 6, 4, 5, 7
    D = 2 if bidir else 1
    ref, ours = pair(make, I, H, L, bidir, bf, nl, bias, torch.float64)
    lengths = torch.tensor([3, 6, 1, 4])
    padded = make(B, T, I, dtype=torch.float64) if bf else make(T, B, I, dtype=torch.float64)
    hx = make(L * D, B, H, dtype=torch.float64)
    results = []
    for module in (ours, ref):
        x = padded.clone().requires_grad_()
        packed = pack_padded_sequence(x, lengths, batch_first=bf, enforce_sorted=False)
        out, h_n = module(packed, hx)
        assert isinstance(out, type(packed))
        unpacked, out_lengths = pad_packed_sequence(out, batch_first=bf)
        assert torch.equal(out_lengths, lengths)
        loss = (unpacked * torch.linspace(-1, 1, unpacked.numel(), dtype=torch.float64).view_as(unpacked)).sum() \
            + (h_n ** 2).sum()
        results.append([out.data, h_n, *torch.autograd.grad(loss, [x, *module.parameters()])])
        assert torch.equal(out.batch_sizes, packed.batch_sizes)
        assert torch.equal(out.sorted_indices, packed.sorted_indices)
    for a, b in zip(*results):
        assert rel_err(a, b) <= FP64_RTOL


def test_rnn_is_a_drop_in(make):
    """Same parameter names and shapes, and the same initial weights for the
    same seed; a torch state dict loads unchanged; the backend is switchable
    and both agree."""
    torch.manual_seed(11)
    ref = torch.nn.RNN(3, 5, num_layers=2, bidirectional=True, batch_first=True, dropout=0.25)
    torch.manual_seed(11)
    ours = RNN(3, 5, num_layers=2, bidirectional=True, batch_first=True, dropout=0.25)
    assert isinstance(ours, torch.nn.RNNBase)
    assert [(n, p.shape) for n, p in ours.named_parameters()] == [(n, p.shape) for n, p in ref.named_parameters()]
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), ref.parameters()))
    assert ours.load_state_dict(ref.state_dict()).missing_keys == []
    assert "backend='fused'" in repr(ours)
    ours.eval()
    x = make(2, 4, 3)
    fused = ours(x)[0]
    ours.backend = "reference"
    assert rel_err(fused, ours(x)[0]) <= FP32_RTOL
    ours.backend = "bogus"
    with pytest.raises(ValueError, match="backend must be one of"):
        ours(x)
    with pytest.raises(ValueError, match="backend must be one of"):
        RNN(3, 5, backend="cudnn")


def test_rnn_dropout_between_layers(make):
    """Train mode drops activations between layers (never after the last);
    eval mode is deterministic and equals the reference."""
    torch.manual_seed(1)
    ours = RNN(8, 64, num_layers=2, dropout=0.5).double()
    ref = torch.nn.RNN(8, 64, num_layers=2, dropout=0.5).double()
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


def test_rnn_bad_input_same_errors_as_torch(make):
    """Size mismatches raise exactly what torch.nn.RNN raises."""
    ref, ours = pair(make, 4, 6, 2, False, False, "tanh", True, torch.float32)
    bad = [
        (make(5, 3, 7), None),                     # wrong input_size
        (make(5, 3, 4), make(1, 3, 6)),           # hx: wrong num_layers
        (make(5, 3, 4), make(2, 2, 6)),           # hx: wrong batch
        (make(5, 3, 4), make(2, 3, 5)),           # hx: wrong hidden size
    ]
    for x, hx in bad:
        with pytest.raises(RuntimeError) as theirs:
            ref(x, hx)
        with pytest.raises(RuntimeError, match=str(theirs.value).replace("[", r"\[").replace("(", r"\(")
                           .replace(")", r"\)").replace("]", r"\]")):
            ours(x, hx)
    with pytest.raises(ValueError, match="2D or 3D"):
        ours(make(2, 5, 3, 4))
    with pytest.raises(ValueError, match="hx should also be 3D"):
        ours(make(5, 3, 4), make(3, 6))


def test_rnn_compiles_fullgraph(make):
    """torch.compile traces the fused path whole (Dynamo refuses nn.RNN
    instances, which is why RNN derives from nn.RNNBase instead)."""
    torch._dynamo.reset()
    model = RNN(4, 6, num_layers=2, bidirectional=True, batch_first=True).double()
    x = make(3, 5, 4, dtype=torch.float64, requires_grad=True)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    (o1, h1), (o2, h2) = compiled(x), model(x)
    assert rel_err(o1, o2) <= FP64_RTOL and rel_err(h1, h2) <= FP64_RTOL
    g1 = torch.autograd.grad(o1.sum(), x)[0]
    g2 = torch.autograd.grad(o2.sum(), x)[0]
    assert rel_err(g1, g2) <= FP64_RTOL


# ------------------------------------------------------------------ RNNCell --
@pytest.mark.parametrize("nl,bias", [("tanh", True), ("relu", False)], ids=["tanh", "relu_nobias"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
def test_rnn_cell_matches_torch(make, nl, bias, dtype):
    torch.manual_seed(3)
    ref = torch.nn.RNNCell(6, 11, bias=bias, nonlinearity=nl).to(dtype)
    ours = RNNCell(6, 11, bias=bias, nonlinearity=nl).to(dtype)
    assert isinstance(ours, torch.nn.RNNCell)
    ours.load_state_dict(ref.state_dict())
    tol = FP64_RTOL if dtype == torch.float64 else FP32_RTOL
    for shape_x, shape_h in [((4, 6), (4, 11)), ((6,), (11,))]:
        x, h = make(*shape_x, dtype=dtype), make(*shape_h, dtype=dtype)
        g = make(*shape_h, dtype=dtype)
        res = []
        for m in (ours, ref):
            xx, hh = x.clone().requires_grad_(), h.clone().requires_grad_()
            out = m(xx, hh)
            res.append([out, *torch.autograd.grad(out, [xx, hh, *m.parameters()], g)])
        for a, b in zip(*res):
            assert a.shape == b.shape and rel_err(a, b) <= tol
        assert rel_err(ours(x), ref(x)) <= tol      # hx=None means zeros


def test_rnn_cell_unrolled_equals_rnn(make):
    """An autoregressive loop of RNNCell steps reproduces RNN over the sequence."""
    cell = RNNCell(5, 8).double()
    seq = RNN(5, 8).double()
    seq.load_state_dict({k + "_l0": v for k, v in cell.state_dict().items()})
    x, h = make(9, 2, 5, dtype=torch.float64), make(2, 8, dtype=torch.float64)
    states = []
    for t in range(9):
        h_t = cell(x[t], h if t == 0 else states[-1])
        states.append(h_t)
    out, h_n = seq(x, h.unsqueeze(0))
    assert rel_err(torch.stack(states), out) <= FP64_RTOL
    assert rel_err(states[-1], h_n[0]) <= FP64_RTOL


def test_rnn_cell_bad_input(make):
    cell = RNNCell(5, 8)
    with pytest.raises(ValueError, match="1D or 2D"):
        cell(make(2, 3, 5))
    with pytest.raises(ValueError, match="hx to be 2D"):
        cell(make(3, 5), make(8))
    with pytest.raises(ValueError, match="w_ih|input"):
        cell(make(3, 4), make(3, 8))
