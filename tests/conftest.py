"""Shared helpers for the fusedseq test suite.

Accuracy is always judged against a float64 reference evaluated on the very
same (already rounded) inputs, with a norm-wise relative error
``‖out − ref‖ / ‖ref‖``:

* float64: ≤ 1e-12;
* float32: ≤ 1e-5;
* float16 / bfloat16: ≤ 2 × the error of PyTorch's own path run in that dtype
  (what ``nn.RNNCell`` / ``nn.RNN`` run, SDPA) + 1e-3. The kernels accumulate
  in fp32, so they should do about as well as PyTorch; the floor absorbs the
  unavoidable rounding of the output itself when PyTorch happens to be lucky
  (for tensors of a few elements, one element one unit of rounding off).

And element by element, because a norm hides one wrong element in a
million: every element must satisfy ``|out − ref| ≤ atol + rtol·|ref|``
with ``atol = k·eps·rms(ref)`` (the tensor's own scale, so that elements
that cancel to ~0 are judged against what they were summed from) and
``rtol = k·eps``, ``eps`` the dtype's machine epsilon and ``k`` from
ELEMENT_EPS below (measured over the whole suite, then rounded up).
:func:`assert_accurate` checks both. So does every ``rel_err(out, ref) <=
tol`` in the tests: :func:`rel_err` returns a :class:`RelErr`, whose
comparison with a tolerance also asserts ``|out − ref| ≤ ELEMENT_SLACK ·
tol · (rms(ref) + |ref|)`` for every element.

Where the exact result is zero through cancellation (e.g. dQ when a query
sees a single key) a relative error measures only noise; the grids avoid
such cases rather than loosen the bounds.
"""
from __future__ import annotations

import itertools
import math
import os
import re
import zlib
from typing import Callable, Optional, Sequence

import pytest
import torch
import torch.nn.functional as F

import fusedseq
import fusedseq.emulated

LOW_PRECISION = (torch.float16, torch.bfloat16)
ALL_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
DTYPE_IDS = {torch.float32: "fp32", torch.float64: "fp64", torch.bfloat16: "bf16", torch.float16: "fp16"}

FP64_RTOL = 1e-12
FP32_RTOL = 1e-5
LOWP_FACTOR = 2.0
LOWP_FLOOR = 1e-3
ILL_CONDITIONED_FACTOR = 4.0

# Per-element bounds: k of |Δ| ≤ k·eps·(rms(ref) + |ref|) for assert_accurate,
# and the slack of the bound that rel_err(...) <= tol adds (see module doc).
# Worst seen over the suite: fp64 56, fp32 81, bf16 4.7, fp16 3.9 eps; rel_err 2.6 × tol.
ELEMENT_EPS = {torch.float64: 128, torch.float32: 128, torch.bfloat16: 8, torch.float16: 8}
ELEMENT_SLACK = 4

FWD_OPS = ("rnn_cell", "rnn", "lstm_cell", "lstm", "gru_cell", "gru", "attention_fwd", "attention_varlen_fwd")
BWD_OPS = ("rnn_cell_backward", "rnn_backward", "lstm_cell_backward", "lstm_backward", "gru_cell_backward",
           "gru_backward", "attention_bwd", "attention_varlen_bwd")
OTHER_OPS = ("attention_dropout_mask",)  # neither differentiable nor autocast: the dropout mask, for tests
ALL_OPS = FWD_OPS + BWD_OPS + OTHER_OPS


def dtype_params(dtypes: Sequence[torch.dtype] = ALL_DTYPES):
    return [pytest.param(d, id=DTYPE_IDS[d]) for d in dtypes]


try:  # hypothesis profiles (tests/test_properties.py): seeded and bounded for CI, longer locally
    from hypothesis import HealthCheck, settings

    settings.register_profile("ci", max_examples=30, derandomize=True, deadline=None, database=None,
                              suppress_health_check=[HealthCheck.too_slow], print_blob=True)
    settings.register_profile("long", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                              print_blob=True)
    settings.load_profile("ci")
except ImportError:
    pass


def pytest_configure(config):
    config.addinivalue_line("markers", "ops(*names): the torch.ops.fusedseq ops a test needs (for the CUDA skip)")
    config.addinivalue_line("markers", "cpu_kernels_only(reason): the test checks what only the CPU kernels do "
                            "(no cuda/emulated variant)")
    config.addinivalue_line("markers", "skip_emulated(reason): no emulated variant (e.g. too large for the "
                            "emulator); the cuda variant still runs")
    # torch.library.opcheck goes through torch.jit internally (torch 2.13).
    config.addinivalue_line("filterwarnings", "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")


# ------------------------------------------------------------------ devices --
def cuda_skip_reason(ops: Sequence[str]) -> Optional[str]:
    """Why a CUDA variant cannot run here, or None when it can."""
    if not torch.cuda.is_available():
        return "no CUDA device available"
    info = fusedseq.build_info()
    if not info["cuda_compiled"]:
        return "this fusedseq build has no CUDA kernels (built without CUDA)"
    missing = [op for op in ops if op not in info["cuda_ops"]]
    if missing:
        return f"no CUDA kernel for {', '.join(missing)} in this build (build_info()['cuda_ops'] = {info['cuda_ops']})"
    return None


def emulated_skip_reason(ops: Sequence[str]) -> Optional[str]:
    """Why the emulated variant cannot run, or None when every op in ``ops``
    has a CUDA kernel that the emulated library runs on the CPU."""
    info = fusedseq.build_info()
    if not info["emulated_compiled"]:
        return "this fusedseq build has no emulated CUDA kernels (built with FUSEDSEQ_EMULATED=OFF)"
    missing = [op for op in ops if op not in info["emulated_ops"]]
    if missing:
        return (f"no CUDA kernel to emulate for {', '.join(missing)} yet (torch.ops.fusedseq_emulated has "
                f"{', '.join(info['emulated_ops']) or 'none'})")
    return None


def emulated_kernels(ops: Sequence[str]):
    """torch.ops.fusedseq.<op> on CPU tensors runs the op's CUDA kernel on the
    host emulator while active (fusedseq.emulated.kernels)."""
    return fusedseq.emulated.kernels(ops)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda),
                        pytest.param("emulated", marks=pytest.mark.emulated)])
def device(request) -> str:
    """Every test taking ``device`` runs on the CPU and has two variants for
    the CUDA kernels: "cuda" runs where a GPU is present, "emulated" runs them
    on the CPU through the host SIMT emulator (CPU tensors; the fixture yields
    "cpu"). Each variant runs only when every op named by the test's
    ``@pytest.mark.ops(...)`` has a CUDA kernel (build_info()["cuda_ops"] /
    ["emulated_ops"]), so tests start to run there on their own as the CUDA
    kernels land."""
    if request.param == "cpu":
        yield "cpu"
        return
    only = request.node.get_closest_marker("cpu_kernels_only")
    if only is not None:
        pytest.skip(f"CPU kernels only: {only.args[0] if only.args else ''}")
    marker = request.node.get_closest_marker("ops")
    ops = marker.args if marker is not None else ALL_OPS
    reason = (cuda_skip_reason if request.param == "cuda" else emulated_skip_reason)(ops)
    if reason:
        pytest.skip(reason)
    if request.param == "cuda":
        yield "cuda"
        return
    _skip_if_marked_emulated(request)
    with emulated_kernels(ops):
        yield "cpu"


@pytest.fixture(autouse=True)
def kernels(request) -> str:
    """For op tests whose tensors stay on the CPU (they do not take ``device``):
    "cpu" runs the CPU kernels, "emulated" the ops' CUDA kernels on the host
    emulator (pytest_generate_tests adds that variant to every test under an
    ``ops`` marker). Every other test simply gets "cpu"."""
    which = getattr(request, "param", "cpu")
    if which == "cpu":
        yield which
        return
    ops = request.node.get_closest_marker("ops").args
    reason = emulated_skip_reason(ops)
    if reason:
        pytest.skip(reason)
    _skip_if_marked_emulated(request)
    with emulated_kernels(ops):
        yield which


def _skip_if_marked_emulated(request) -> None:
    marker = request.node.get_closest_marker("skip_emulated")
    if marker is not None:
        pytest.skip(f"not on the emulator: {marker.args[0] if marker.args else ''}")


def pytest_generate_tests(metafunc):
    if "device" not in metafunc.fixturenames and metafunc.definition.get_closest_marker("ops") is not None \
            and metafunc.definition.get_closest_marker("cpu_kernels_only") is None:
        metafunc.parametrize("kernels", ["cpu", pytest.param("emulated", marks=pytest.mark.emulated)],
                             indirect=True)


# -------------------------------------------------------------------- inputs --
class Maker:
    """Fresh random tensors from a generator seeded by the test's id, so a
    failure reproduces exactly and no two tests share data. Values are
    Gaussian: never zeros, never constant."""

    def __init__(self, seed: int, device: str = "cpu"):
        self.gen = torch.Generator().manual_seed(seed)
        self.device = device

    def __call__(self, *shape: int, dtype=torch.float32, scale: float = 1.0, device: Optional[str] = None,
                 requires_grad: bool = False) -> torch.Tensor:
        t = torch.randn(*shape, generator=self.gen, dtype=torch.float64) * scale
        t = t.to(device=device or self.device, dtype=dtype)
        return t.requires_grad_(requires_grad)


def _seed_id(node) -> str:
    """The test's id without its ``kernels`` variant, so that the CPU and the
    emulated kernels see the same inputs (the ones the test had before the
    variant existed)."""
    which = getattr(getattr(node, "callspec", None), "params", {}).get("kernels")
    if which is None:
        return node.nodeid
    return re.sub(rf"\[{which}\]$|(?<=\[){which}-|-{which}(?=\]$)", "", node.nodeid, count=1)


@pytest.fixture
def make(request) -> Maker:
    """Tensors on the test's ``device`` (when it takes that fixture), else the CPU."""
    device = request.getfixturevalue("device") if "device" in request.fixturenames else "cpu"
    return Maker(zlib.crc32(_seed_id(request.node).encode()), device)


@pytest.fixture
def one_thread():
    """One torch thread for the test (a module opts in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``). On a shared
    machine every parallel region waits for a descheduled thread: an LSTM
    check at T=200 took 40 s with two threads and 2 s with one. Modules that
    use it keep a test that sets two threads and compares."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def to64(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if t is None else t.detach().to("cpu", torch.float64)


# ----------------------------------------------------------------- accuracy --
def _worst_element(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, tuple, float, float]:
    """max over elements of |out − ref| / (rms(ref) + |ref|) (rms 1 for an all-zero ref),
    with where it is and the two values there (float64, CPU tensors)."""
    if ref.numel() == 0:
        return 0.0, (), 0.0, 0.0
    rms = torch.linalg.vector_norm(ref).item() / math.sqrt(ref.numel()) or 1.0
    ratio = ((out - ref).abs() / (rms + ref.abs())).nan_to_num(nan=math.inf)
    i = int(ratio.argmax())
    where = tuple(int(j) for j in torch.unravel_index(torch.tensor(i), ref.shape))
    return ratio.flatten()[i].item(), where, out.flatten()[i].item(), ref.flatten()[i].item()


def _log(kind: str, dtype, value: float) -> None:
    path = os.environ.get("FUSEDSEQ_TOL_LOG")
    if path:
        with open(path, "a") as f:
            f.write(f"{kind} {DTYPE_IDS.get(dtype, dtype)} {value!r} {os.environ.get('PYTEST_CURRENT_TEST', '')}\n")


class RelErr(float):
    """``‖out − ref‖ / ‖ref‖``, which also knows its worst element: ``err <= tol``
    (or ``<``) asserts, besides the norm-wise bound it returns, that every
    element is within ``ELEMENT_SLACK·tol·(rms(ref) + |ref|)`` (an
    AssertionError naming the element if not)."""

    def __new__(cls, value: float, element: tuple, dtype):
        self = super().__new__(cls, value)
        self.element, self.dtype = element, dtype
        return self

    def _elements_within(self, tol: float) -> None:
        ratio, where, got, want = self.element
        _log("rel_err", self.dtype, ratio / tol if tol else math.inf)
        assert ratio <= ELEMENT_SLACK * tol, (
            f"element {list(where)}: got {got!r}, reference {want!r}: |Δ| is {ratio:.3g}·(rms(ref) + |ref|), "
            f"over the per-element bound {ELEMENT_SLACK}·{tol:.3g} (norm-wise error {float(self):.3g})")

    def __le__(self, tol):
        self._elements_within(float(tol))
        return float(self) <= tol

    def __lt__(self, tol):
        self._elements_within(float(tol))
        return float(self) < tol


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> RelErr:
    """‖out − ref‖ / ‖ref‖ in float64 (absolute error when ref is exactly 0);
    comparing it with a tolerance also checks every element (see RelErr)."""
    assert out.shape == ref.shape, f"shape {tuple(out.shape)} != reference shape {tuple(ref.shape)}"
    dtype = out.dtype
    out = out.detach().to("cpu", torch.float64)
    ref = ref.detach().to("cpu", torch.float64)
    num = torch.linalg.vector_norm(out - ref).item()
    den = torch.linalg.vector_norm(ref).item()
    return RelErr(num / den if den > 0 else num, _worst_element(out, ref), dtype)


def assert_elementwise(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, what: str = "output",
                       baseline: Optional[torch.Tensor] = None, factor: float = LOWP_FACTOR) -> None:
    """Every element: |out − ref| ≤ k·eps·(rms(ref) + |ref|), k = ELEMENT_EPS[dtype];
    with a ``baseline``, an element may instead be within ``factor`` × PyTorch's
    own error on it: e.g. tanh' = 1 − h² from an output that
    rounds to ±1 is 0 in PyTorch's bf16 path as in ours."""
    out, ref = out.detach().to("cpu", torch.float64), ref.detach().to("cpu", torch.float64)
    eps, k = torch.finfo(dtype).eps, ELEMENT_EPS[dtype]
    if baseline is not None:
        base_err = (baseline.detach().to("cpu", torch.float64) - ref).abs()
        ours_err = (out - ref).abs()
        out = torch.where(ours_err <= factor * base_err, ref, out)  # those elements pass
    ratio, where, got, want = _worst_element(out, ref)
    _log("element", dtype, ratio / eps)
    assert ratio <= k * eps, (f"{what}: element {list(where)} is {got!r}, reference {want!r}: |Δ| = "
                              f"{ratio / eps:.3g}·eps·(rms(ref) + |ref|) > {k}·eps ({DTYPE_IDS[dtype]})")


def tolerance(dtype: torch.dtype, baseline_err: Optional[float] = None, numel: int = 1 << 30,
              factor: float = LOWP_FACTOR) -> float:
    if dtype == torch.float64:
        return FP64_RTOL
    if dtype == torch.float32:
        return FP32_RTOL
    assert dtype in LOW_PRECISION, dtype
    assert baseline_err is not None, "low precision needs PyTorch's own error as the yardstick"
    # In a tensor of a handful of elements one rounding decides the norm-wise
    # error, and PyTorch may be lucky where we are not: allow two units of
    # rounding (2·eps/sqrt(numel)); from 64 elements on (bf16) the 1e-3 floor
    # rules. (The property tests found a 2-element dK, 2 ulp off where
    # PyTorch was 0.3 ulp off; over 200 seeds ours is the more accurate.)
    floor = max(LOWP_FLOOR, 2 * torch.finfo(dtype).eps / math.sqrt(max(numel, 1)))
    return factor * baseline_err + floor


def assert_accurate(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype,
                    baseline: Optional[torch.Tensor] = None, what: str = "output",
                    ill_conditioned: bool = False) -> float:
    """out (dtype) against the float64 ref, norm-wise (low precision against
    PyTorch's own result ``baseline`` in that dtype) and element by element.
    ``ill_conditioned``: the inputs may be ones where no fp32 computation
    meets the fp32/fp64 bounds (random shapes: a softmax row dominated by one
    key makes dQ, dK differences of nearly equal numbers), so there being
    within ILL_CONDITIONED_FACTOR x PyTorch's own error passes too (on one
    such instance PyTorch may be lucky). Returns the norm-wise error."""
    assert out.dtype == dtype, f"{what}: dtype {out.dtype}, expected {dtype}"
    relative = baseline is not None and (dtype in LOW_PRECISION or ill_conditioned)
    err = rel_err(out, ref)
    base_err = rel_err(baseline, ref) if relative else None
    factor = ILL_CONDITIONED_FACTOR if ill_conditioned else LOWP_FACTOR
    tol = tolerance(dtype, base_err, ref.numel(), factor) if dtype in LOW_PRECISION else \
        max(tolerance(dtype), factor * float(base_err or 0.0))
    extra = f", PyTorch's own {DTYPE_IDS[dtype]} path: {base_err:.3g}" if base_err is not None else ""
    assert float(err) <= tol, f"{what}: relative error {err:.3g} > {tol:.3g} ({DTYPE_IDS[dtype]}{extra})"
    assert_elementwise(out, ref, dtype, what, baseline if relative else None, factor)
    return err


# ------------------------------------------------------------ forward+backward --
def fwd_bwd(fn: Callable, inputs: dict, cotangents: Optional[Sequence[Optional[torch.Tensor]]] = None,
            *, grad_of: Optional[Sequence[str]] = None, dtype: Optional[torch.dtype] = None,
            device: Optional[str] = None):
    """Runs ``fn(**inputs)`` on fresh leaf copies of the tensor inputs (cast to
    ``dtype`` / ``device`` when given) and back-propagates ``cotangents``
    (one per output, None for an output the loss does not use).

    Returns ``(outputs, grads)``: a tuple of outputs and a dict name -> grad for
    every tensor input in ``grad_of`` (default: all tensor inputs)."""
    leaves = {}
    for name, t in inputs.items():
        if isinstance(t, torch.Tensor):
            t = t.detach().to(device=device or t.device, dtype=dtype or t.dtype).clone()
            if grad_of is None or name in grad_of:
                t.requires_grad_(True)
        leaves[name] = t
    outs = fn(**leaves)
    outs = outs if isinstance(outs, tuple) else (outs,)
    if cotangents is None:
        return tuple(o.detach() for o in outs), {}
    used = [(o, c.to(device=o.device, dtype=o.dtype)) for o, c in zip(outs, cotangents) if c is not None]
    names = [n for n, t in leaves.items() if isinstance(t, torch.Tensor) and t.requires_grad]
    grads = torch.autograd.grad([o for o, _ in used], [leaves[n] for n in names], [c for _, c in used])
    return tuple(o.detach() for o in outs), dict(zip(names, grads))


def assert_compiled_matches_eager(f: Callable, args: Sequence[torch.Tensor], make: Maker,
                                  tol: float = 1e-6) -> None:
    """``torch.compile(f, fullgraph=True)`` gives the outputs and the gradients
    (of fresh random cotangents) of eager ``f`` to ``tol``; dynamo's caches
    are reset before and after."""
    torch._dynamo.reset()
    try:
        outs_c = torch.compile(f, fullgraph=True)(*args)
        cots = [make(*o.shape, dtype=o.dtype) for o in outs_c]
        grads_c = torch.autograd.grad(outs_c, args, cots)
        outs_e = f(*args)
        grads_e = torch.autograd.grad(outs_e, args, cots)
        for a, b in zip((*outs_c, *grads_c), (*outs_e, *grads_e)):
            assert rel_err(a, b) <= tol
    finally:
        torch._dynamo.reset()


def check_against_reference(fused: Callable, reference: Callable, inputs: dict, dtype: torch.dtype,
                            make: Maker, *, baseline: Optional[Callable] = None,
                            used_outputs: Optional[Sequence[bool]] = None, device: str = "cpu",
                            backward: bool = True, out_names: Sequence[str] = ("out",),
                            ill_conditioned: bool = False):
    """Forward and backward of ``fused`` in ``dtype`` against ``reference`` in
    float64 on the same rounded inputs; in low precision, ``baseline``
    (PyTorch's own path) run in ``dtype`` sets the yardstick.

    ``inputs``: name -> tensor (float64, to be rounded to ``dtype``) or any
    other argument. Returns the fused outputs and grads."""
    rounded = {n: (t.to(dtype) if isinstance(t, torch.Tensor) else t) for n, t in inputs.items()}
    outs, _ = fwd_bwd(fused, rounded, device=device)
    assert len(outs) == len(out_names)
    cots = None
    if backward:
        used = used_outputs or [True] * len(outs)
        cots = [make(*o.shape, dtype=dtype) if u else None for o, u in zip(outs, used)]
    outs, grads = fwd_bwd(fused, rounded, cots, device=device)
    ref_outs, ref_grads = fwd_bwd(reference, {n: (to64(t) if isinstance(t, torch.Tensor) else t)
                                              for n, t in rounded.items()},
                                  None if cots is None else [to64(c) for c in cots])
    base_outs, base_grads = (None, {})
    if baseline is not None and (dtype in LOW_PRECISION or ill_conditioned):
        base_outs, base_grads = fwd_bwd(baseline, rounded, cots)
    for i, (o, r) in enumerate(zip(outs, ref_outs)):
        assert o.device.type == torch.device(device).type
        assert_accurate(o, r, dtype, None if base_outs is None else base_outs[i], what=out_names[i],
                        ill_conditioned=ill_conditioned)
    if backward:
        assert set(grads) == set(ref_grads)
        for name, g in grads.items():
            assert g is not None, f"no gradient for {name}"
            assert_accurate(g, ref_grads[name], dtype, base_grads.get(name), what=f"grad of {name}",
                            ill_conditioned=ill_conditioned)
    return outs, grads


# ---------------------------------------------------- PyTorch's own paths --
def torch_rnn_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh"):
    """What ``nn.RNNCell`` runs (``torch.rnn_{tanh,relu}_cell``), taking the
    same optional arguments as fusedseq.rnn_cell."""
    unbatched = x.dim() == 1
    if unbatched:
        x = x.unsqueeze(0)
        h = None if h is None else h.unsqueeze(0)
    if h is None:
        h = x.new_zeros(x.shape[0], w_hh.shape[0])
    cell = torch.rnn_tanh_cell if nonlinearity == "tanh" else torch.rnn_relu_cell
    out = cell(x, h, w_ih, w_hh, b_ih, b_hh)
    return out.squeeze(0) if unbatched else out


def torch_rnn(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh", batch_first=False):
    """What a one-layer ``nn.RNN`` runs (``torch.rnn_{tanh,relu}``); a missing
    bias of the pair is a zero one (nn.RNN has both or none)."""
    unbatched = x.dim() == 2
    if unbatched:
        x = x.unsqueeze(1)
        h0 = None if h0 is None else h0.unsqueeze(0)
        batch_first = False
    B = x.shape[0] if batch_first else x.shape[1]
    if h0 is None:
        h0 = x.new_zeros(B, w_hh.shape[0])
    params = [w_ih, w_hh]
    has_bias = b_ih is not None or b_hh is not None
    if has_bias:
        params += [b_ih if b_ih is not None else w_hh.new_zeros(w_hh.shape[0]),
                   b_hh if b_hh is not None else w_hh.new_zeros(w_hh.shape[0])]
    fn = torch.rnn_tanh if nonlinearity == "tanh" else torch.rnn_relu
    out, h_n = fn(x, h0.unsqueeze(0), params, has_bias, 1, 0.0, False, False, batch_first)
    h_n = h_n.squeeze(0)
    if unbatched:
        return out.squeeze(1), h_n.squeeze(0)
    return out, h_n


def torch_attention(q, k, v, causal=False, scale=None, *, attn_mask=None, is_causal=None, dropout_p=0.0):
    """SDPA as PyTorch picks it (``is_causal`` or its older name ``causal``).
    PyTorch's CPU flash kernel returns NaN for causal attention with a
    negative or zero scale (torch 2.13; zero found by the property tests), so
    a negative scale is applied as SDPA(-q, scale=|scale|) and a zero (or
    subnormal) one as SDPA(0·q, scale=1): the same logits, bit for bit
    (negation and multiplying by 0 are exact), through the same kernel."""
    if is_causal is not None:
        causal = is_causal
    if scale is not None and scale < 0:
        q, scale = -q, -scale
    if scale is not None and scale < torch.finfo(torch.float32).tiny:  # 0, or 0 once in float32
        q, scale = q * 0, 1.0
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=causal,
                                          scale=scale, enable_gqa=True)


def rnn_weights(make: Maker, I: int, H: int, *, bias=(True, True), dtype=torch.float64, w_hh_gain: float = 0.7):
    """Weights scaled like nn.RNN's init (∝ 1/sqrt(fan-in)); W_hh's spectral
    radius ≈ ``w_hh_gain`` < 1 keeps long relu recurrences from exploding."""
    w_ih = make(H, I, dtype=dtype, scale=1.0 / math.sqrt(I))
    w_hh = make(H, H, dtype=dtype, scale=w_hh_gain / math.sqrt(H))
    b_ih = make(H, dtype=dtype, scale=0.5) if bias[0] else None
    b_hh = make(H, dtype=dtype, scale=0.5) if bias[1] else None
    return w_ih, w_hh, b_ih, b_hh


def missing_pairs(cases: Sequence[tuple], factors: Sequence[str], levels: dict) -> list[tuple]:
    """For a pairwise test design: every (factor, value, factor, value) pair of
    two factors in ``levels`` (name -> the values the design must cover) that
    no case holds; ``factors`` names the columns of ``cases``."""
    idx = {f: i for i, f in enumerate(factors)}
    missing = []
    for f, g in itertools.combinations(levels, 2):
        seen = {(c[idx[f]], c[idx[g]]) for c in cases}
        missing += [(f, a, g, b) for a in levels[f] for b in levels[g] if (a, b) not in seen]
    return missing


def with_views(fn: Callable, views: Optional[dict] = None, **fixed) -> Callable:
    """``fn`` called on leaves after applying ``views[name]`` (e.g. a transpose
    that makes the op see a non-contiguous tensor), plus fixed arguments."""
    views = views or {}

    def call(**leaves):
        args = {n: (views[n](t) if n in views and t is not None else t) for n, t in leaves.items()}
        return fn(**args, **fixed)

    return call


def poison_heap(*nbytes: int, rounds: int = 2, copies: int = 4) -> None:
    """Leaves freed heap chunks of these sizes filled with 0xFF bytes (NaN in
    every float dtype), so that an op which leaves part of a freshly allocated
    output unwritten shows NaN instead of a lucky zero. Two rounds: the first
    one moves glibc's mmap threshold so that large chunks are reused too."""
    for _ in range(rounds):
        blocks = [torch.full((max(n, 1),), 255, dtype=torch.uint8) for n in nbytes for _ in range(copies)]
        del blocks


def nbytes(shape: Sequence[int], dtype: torch.dtype) -> int:
    return math.prod(shape) * torch.empty((), dtype=dtype).element_size()
