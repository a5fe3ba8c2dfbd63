"""What the build contains: build_info(), the registered ops and their kernels,
and the CUDA variants of the op tests (which skip without a GPU / kernels)."""
from __future__ import annotations

import pathlib
import re
import sys

import pytest
import torch

import fusedseq

from conftest import ALL_OPS, FWD_OPS, cuda_skip_reason

ROOT = pathlib.Path(__file__).resolve().parents[1]

SCHEMAS = {
    "rnn_cell": "fusedseq::rnn_cell(Tensor x, Tensor h, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, "
                "str nonlinearity) -> Tensor",
    "rnn_cell_backward": "fusedseq::rnn_cell_backward(Tensor grad_h_next, Tensor h_next, Tensor x, Tensor h, "
                         "Tensor w_ih, Tensor w_hh, str nonlinearity) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
    "rnn": "fusedseq::rnn(Tensor x, Tensor h0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, "
           "str nonlinearity) -> (Tensor, Tensor)",
    "rnn_backward": "fusedseq::rnn_backward(Tensor grad_output, Tensor grad_h_n, Tensor output, Tensor x, Tensor h0, "
                    "Tensor w_ih, Tensor w_hh, str nonlinearity) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
    "attention_fwd": "fusedseq::attention_fwd(Tensor q, Tensor k, Tensor v, bool causal, float scale) "
                     "-> (Tensor, Tensor)",
    "attention_bwd": "fusedseq::attention_bwd(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, "
                     "bool causal, float scale) -> (Tensor, Tensor, Tensor)",
}


def test_build_info_keys_and_types():
    info = fusedseq.build_info()
    expected = {"version": str, "torch_version": str, "cuda_compiled": bool, "cuda_archs": str,
                "cuda_ops": list, "cpu_simd": str, "torch_version_runtime": str, "cuda_available": bool}
    for key, typ in expected.items():
        assert key in info, key
        assert isinstance(info[key], typ), (key, info[key])
    assert "cuda_runtime_version" in info


def test_version_matches_pyproject():
    if sys.version_info >= (3, 11):
        import tomllib
        version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    else:
        version = re.search(r'^version\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert fusedseq.build_info()["version"] == fusedseq.__version__ == version


def test_built_against_the_running_torch():
    """An extension built against another torch may load and then crash: the
    versions must agree."""
    info = fusedseq.build_info()
    assert info["torch_version_runtime"] == torch.__version__
    assert info["torch_version"] == torch.__version__


def test_cpu_simd_level_is_named():
    assert fusedseq.build_info()["cpu_simd"] in {"avx2+fma", "scalar"}


def test_cuda_facts_are_consistent():
    info = fusedseq.build_info()
    assert info["cuda_available"] == torch.cuda.is_available()
    assert set(info["cuda_ops"]) <= set(ALL_OPS)
    if info["cuda_compiled"]:
        archs = re.split(r"[;, ]+", info["cuda_archs"].strip())
        assert archs and all(re.fullmatch(r"(sm_)?\d+a?", a) for a in archs), info["cuda_archs"]
        assert info["cuda_runtime_version"]
        if torch.cuda.is_available():
            assert info["cuda_probe"] == "ok", info["cuda_probe"]
    else:
        assert info["cuda_archs"] == "" and info["cuda_runtime_version"] is None
        assert info["cuda_ops"] == []  # no CUDA code at all, so no op can claim a kernel


def test_cuda_skip_reason():
    reason = cuda_skip_reason(["attention_fwd"])
    if not torch.cuda.is_available():
        assert reason == "no CUDA device available"
    elif "attention_fwd" in fusedseq.build_info()["cuda_ops"]:
        assert reason is None
    else:
        assert reason is not None


@pytest.mark.parametrize("name", ALL_OPS)
def test_op_registered_with_schema(name):
    op = getattr(torch.ops.fusedseq, name).default
    assert str(op._schema) == SCHEMAS[name]


@pytest.mark.parametrize("name", ALL_OPS)
def test_op_kernels(name):
    """CPU and CUDA kernels (CUDA: checks, then NotImplementedError until a
    kernel lands), a fake kernel for tracing, autograd for the forward ops and
    autocast rules for the forward ops."""
    qualname = f"fusedseq::{name}"
    has = torch._C._dispatch_has_kernel_for_dispatch_key
    assert has(qualname, "CPU") and has(qualname, "CUDA") and has(qualname, "Meta")
    if name in FWD_OPS:
        assert has(qualname, "AutocastCPU") and has(qualname, "AutocastCUDA")
        assert torch._C._dispatch_has_kernel_for_dispatch_key(qualname, "Autograd") or \
            torch._C._dispatch_has_kernel_for_dispatch_key(qualname, "AutogradCPU")


def _meta(*shape, dtype=torch.float32):
    return torch.empty(*shape, device="meta", dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_fake_kernels_on_meta_tensors(dtype):
    ops = torch.ops.fusedseq
    T, B, I, H = 5, 3, 4, 6
    x, h, w_ih, w_hh = _meta(B, I, dtype=dtype), _meta(B, H, dtype=dtype), _meta(H, I, dtype=dtype), _meta(
        H, H, dtype=dtype)
    out = ops.rnn_cell(x, h, w_ih, w_hh, None, None, "tanh")
    assert out.shape == (B, H) and out.dtype == dtype and out.device.type == "meta"
    grads = ops.rnn_cell_backward(out, out, x, h, w_ih, w_hh, "tanh")
    assert [g.shape for g in grads] == [(B, I), (B, H), (H, I), (H, H), (H,)]
    xs = _meta(T, B, I, dtype=dtype)
    output, h_n = ops.rnn(xs, h, w_ih, w_hh, None, None, "relu")
    assert output.shape == (T, B, H) and h_n.shape == (B, H) and output.dtype == h_n.dtype == dtype
    grads = ops.rnn_backward(output, h_n, output, xs, h, w_ih, w_hh, "relu")
    assert [g.shape for g in grads] == [(T, B, I), (B, H), (H, I), (H, H), (H,)]
    q, k = _meta(2, 4, 7, 16, dtype=dtype), _meta(2, 2, 9, 16, dtype=dtype)
    out, lse = ops.attention_fwd(q, k, k, True, 0.25)
    assert out.shape == (2, 4, 7, 16) and out.dtype == dtype
    assert lse.shape == (2, 4, 7) and lse.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    dq, dk, dv = ops.attention_bwd(out, q, k, k, out, lse, True, 0.25)
    assert dq.shape == q.shape and dk.shape == dv.shape == k.shape


def test_every_op_has_tests_for_both_devices(request):
    """The op tests take the ``device`` fixture, so each has a CUDA variant;
    on this machine those must be collected and skipped, not absent."""
    items = [i for i in request.session.items if "[cuda" in i.nodeid]
    if not any("test_attention.py" in i.nodeid for i in request.session.items):
        pytest.skip("only meaningful when the op test files are collected together")
    files = {pathlib.Path(i.fspath).name for i in items}
    assert {"test_rnn_cell.py", "test_rnn.py", "test_attention.py"} <= files
    marked = {op for i in items for m in i.iter_markers("ops") for op in m.args}
    assert set(ALL_OPS) <= marked
