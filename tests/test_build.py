"""What the build contains: build_info(), the registered ops and their kernels,
and the CUDA variants of the op tests (which skip without a GPU / kernels)."""
from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
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
    "lstm_cell": "fusedseq::lstm_cell(Tensor x, Tensor h, Tensor c, Tensor w_ih, Tensor w_hh, Tensor? b_ih, "
                 "Tensor? b_hh) -> (Tensor, Tensor, Tensor)",
    "lstm_cell_backward": "fusedseq::lstm_cell_backward(Tensor grad_h_next, Tensor grad_c_next, Tensor gates, "
                          "Tensor x, Tensor h, Tensor c, Tensor w_ih, Tensor w_hh) "
                          "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
    "lstm": "fusedseq::lstm(Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh) "
            "-> (Tensor, Tensor, Tensor)",
    "lstm_backward": "fusedseq::lstm_backward(Tensor grad_output, Tensor grad_cell_states, Tensor output, "
                     "Tensor cell_states, Tensor gates, Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh) "
                     "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
    "gru_cell": "fusedseq::gru_cell(Tensor x, Tensor h, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh) "
                "-> (Tensor, Tensor)",
    "gru_cell_backward": "fusedseq::gru_cell_backward(Tensor grad_h_next, Tensor gates, Tensor x, Tensor h, "
                         "Tensor w_ih, Tensor w_hh) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
    "gru": "fusedseq::gru(Tensor x, Tensor h0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh) "
           "-> (Tensor, Tensor)",
    "gru_backward": "fusedseq::gru_backward(Tensor grad_output, Tensor output, Tensor gates, Tensor x, Tensor h0, "
                    "Tensor w_ih, Tensor w_hh) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
    "attention_fwd": "fusedseq::attention_fwd(Tensor q, Tensor k, Tensor v, Tensor? attn_mask, float dropout_p, "
                     "bool is_causal, float scale, int window_left, int window_right, int seed, int offset) "
                     "-> (Tensor, Tensor, Tensor)",
    "attention_bwd": "fusedseq::attention_bwd(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, "
                     "Tensor lse_lo, Tensor? attn_mask, float dropout_p, bool is_causal, float scale, "
                     "int window_left, int window_right, int seed, int offset) -> (Tensor, Tensor, Tensor)",
    "attention_varlen_fwd": "fusedseq::attention_varlen_fwd(Tensor q, Tensor k, Tensor v, Tensor cu_seqlens_q, "
                            "Tensor cu_seqlens_k, int max_seqlen_q, int max_seqlen_k, float dropout_p, "
                            "bool is_causal, float scale, int window_left, int window_right, int seed, int offset) "
                            "-> (Tensor, Tensor, Tensor)",
    "attention_varlen_bwd": "fusedseq::attention_varlen_bwd(Tensor grad_out, Tensor q, Tensor k, Tensor v, "
                            "Tensor out, Tensor lse, Tensor lse_lo, Tensor cu_seqlens_q, Tensor cu_seqlens_k, "
                            "int max_seqlen_q, int max_seqlen_k, float dropout_p, bool is_causal, float scale, "
                            "int window_left, int window_right, int seed, int offset) -> (Tensor, Tensor, Tensor)",
    "attention_dropout_mask": "fusedseq::attention_dropout_mask(Tensor q, int Nk, float dropout_p, int seed, "
                              "int offset) -> Tensor",
}


def test_build_info_keys_and_types():
    info = fusedseq.build_info()
    expected = {"version": str, "torch_version": str, "torch_target_version": str, "cuda_compiled": bool,
                "cuda_archs": str, "cuda_ops": list, "cpu_isa": str, "cpu_isas_compiled": list,
                "cpu_isas_runnable": list, "torch_version_runtime": str, "cuda_available": bool,
                "emulated_compiled": bool, "emulated_ops": list}
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


def _major_minor(version: str) -> tuple[int, int]:
    major, minor = re.match(r"(\d+)\.(\d+)", version).groups()
    return int(major), int(minor)


def test_runs_with_a_torch_at_or_after_its_stable_abi_target():
    """The bindings use the LibTorch stable ABI only: the running torch may
    differ from the one compiled against, but must not be older than the
    target (CI builds against one torch and runs the suite with another)."""
    info = fusedseq.build_info()
    assert info["torch_version_runtime"] == torch.__version__
    assert _major_minor(torch.__version__) >= _major_minor(info["torch_target_version"])
    assert _major_minor(info["torch_version"]) >= _major_minor(info["torch_target_version"])


def _extension_path() -> pathlib.Path:
    return pathlib.Path(fusedseq._C.__file__)


@pytest.mark.skipif(shutil.which("nm") is None, reason="needs nm (binutils)")
def test_extension_uses_no_unstable_torch_symbols():
    """A symbol of torch's C++ API (namespaces at, c10, torch) would tie the
    module to one torch release; the stable C shim (aoti_torch_*, torch_*)
    is all it may import from torch."""
    out = subprocess.run(["nm", "-D", "--undefined-only", str(_extension_path())], check=True,
                         capture_output=True, text=True).stdout
    mangled = re.compile(r"\b_ZN?K?(2at|3c10|5torch|5caffe2)")
    unstable = [line.split()[-1] for line in out.splitlines() if mangled.search(line)]
    assert not unstable, f"unstable torch C++ symbols imported: {unstable[:10]}"
    assert any("torch_call_dispatcher" in line or "aoti_torch_" in line for line in out.splitlines())


def test_cpu_isa_is_chosen_from_the_cpu():
    info = fusedseq.build_info()
    assert info["cpu_isas_compiled"][0] == "baseline"
    assert set(info["cpu_isas_runnable"]) <= set(info["cpu_isas_compiled"])
    wanted = os.environ.get("FUSEDSEQ_CPU_ISA")
    assert info["cpu_isa"] == (wanted or info["cpu_isas_runnable"][-1])


def _import_with_isa(isa: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, FUSEDSEQ_CPU_ISA=isa)
    code = "import fusedseq; print(fusedseq.build_info()['cpu_isa'])"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


@pytest.mark.parametrize("isa", fusedseq.build_info()["cpu_isas_runnable"])
def test_cpu_isa_override(isa):
    r = _import_with_isa(isa)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == isa


def test_cpu_isa_override_unknown_name_fails_the_import_clearly():
    r = _import_with_isa("avx9000")
    assert r.returncode != 0
    assert "FUSEDSEQ_CPU_ISA=avx9000" in r.stderr and "baseline" in r.stderr


@pytest.mark.skipif(shutil.which("objdump") is None, reason="needs objdump (binutils)")
def test_only_the_avx2_variant_holds_avx_instructions():
    """The baseline build of the kernels, the ISA selector and the bindings
    must run on any x86-64 CPU: in the linked module, every function that
    holds an AVX instruction (a ymm/zmm register or a VEX-encoded mnemonic)
    must belong to the avx2 variant. This also catches the linker keeping
    an AVX2 copy of an inline function that baseline code calls."""
    if "avx2" not in fusedseq.build_info()["cpu_isas_compiled"]:
        pytest.skip("no AVX2 variant in this build")
    dis = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-C", str(_extension_path())], check=True,
                         capture_output=True, text=True).stdout
    # An instruction line is "  addr:\tmnemonic operands". VEX/EVEX mnemonics all
    # start with "v" (vaddps, vfmadd231ps, vzeroupper...); no SSE2 or integer
    # mnemonic does, but for verr/verw, which compilers never emit.
    avx = re.compile(r"^\s*[0-9a-f]+:\t(v[a-z0-9]+\b|[^#<]*%[yz]mm)")
    offenders, func, seen_in_func = [], None, False
    for line in dis.splitlines():
        header = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if header:
            func = header.group(1)
            seen_in_func = False
            continue
        if func and not seen_in_func and avx.search(line):
            seen_in_func = True
            if "fusedseq::cpu::avx2::" not in func:
                offenders.append(func)
    assert not offenders, f"{len(offenders)} functions outside the avx2 variant use AVX: {offenders[:8]}"
    assert re.search(r"fusedseq::cpu::avx2::", dis), "the avx2 variant is missing from the module"


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
    autocast rules (registered from Python) for the forward ops."""
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
    lse_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    mask = torch.empty(2, 1, 1, 9, device="meta", dtype=torch.bool)
    out, lse, lse_lo = ops.attention_fwd(q, k, k, mask, 0.1, False, 0.25, 3, -1, 7, 0)
    assert out.shape == (2, 4, 7, 16) and out.dtype == dtype
    assert lse.shape == lse_lo.shape == (2, 4, 7) and lse.dtype == lse_lo.dtype == lse_dtype
    dq, dk, dv = ops.attention_bwd(out, q, k, k, out, lse, lse_lo, mask, 0.1, False, 0.25, 3, -1, 7, 0)
    assert dq.shape == q.shape and dk.shape == dv.shape == k.shape
    qp, kp = _meta(12, 4, 16, dtype=dtype), _meta(15, 2, 16, dtype=dtype)
    cu = torch.empty(4, device="meta", dtype=torch.int32)
    out, lse, lse_lo = ops.attention_varlen_fwd(qp, kp, kp, cu, cu, 6, 7, 0.0, True, 0.25, -1, -1, 0, 0)
    assert out.shape == qp.shape and lse.shape == lse_lo.shape == (4, 12) and lse.dtype == lse_dtype
    dq, dk, dv = ops.attention_varlen_bwd(out, qp, kp, kp, out, lse, lse_lo, cu, cu, 6, 7, 0.0, True, 0.25, -1, -1,
                                          0, 0)
    assert dq.shape == qp.shape and dk.shape == dv.shape == kp.shape
    keep = ops.attention_dropout_mask(q, 9, 0.5, 1, 0)
    assert keep.shape == (2, 4, 7, 9) and keep.dtype == torch.bool


def test_every_op_has_tests_for_both_devices(request):
    """The op tests take the ``device`` fixture, so each has a CUDA variant and
    an emulated one; on this machine those must be collected and skipped
    (until an op has a CUDA kernel), not absent."""
    if not any("test_attention.py" in i.nodeid for i in request.session.items):
        pytest.skip("only meaningful when the op test files are collected together")
    markexpr = request.config.getoption("markexpr", default="") or ""
    for variant in ("[cuda", "[emulated"):
        if variant[1:] in markexpr:  # e.g. CI's cross-version run with -m "not emulated" deselected them
            continue
        items = [i for i in request.session.items if variant in i.nodeid]
        files = {pathlib.Path(i.fspath).name for i in items}
        assert {"test_rnn_cell.py", "test_rnn.py", "test_lstm_gru.py", "test_attention.py"} <= files, variant
        marked = {op for i in items for m in i.iter_markers("ops") for op in m.args}
        assert set(ALL_OPS) <= marked, variant


def _cmake() -> str | None:
    here = pathlib.Path(sys.executable).parent / "cmake"
    return str(here) if here.exists() else shutil.which("cmake")


@pytest.mark.skipif(_cmake() is None, reason="needs cmake")
def test_per_file_cuda_arch_lists(tmp_path):
    """cmake/cuda_archs.cmake: a *_sm90a.cu file is compiled for 90a alone (never
    sm_80), *_sm90.cu for 90 and newer, any other file for every arch; PTX only
    for the highest plain arch of each file."""
    script = f"""
include("{ROOT / 'cmake' / 'cuda_archs.cmake'}")
set(FUSEDSEQ_CUDA_ARCHS "80;90;90a")
foreach(f attention.cu attention_sm90a.cu tma_sm90.cu blackwell_sm100a.cu)
  fusedseq_cuda_file_archs("${{f}}" archs)
  fusedseq_gencode("${{archs}}" flags)
  message("${{f}}|${{archs}}|${{flags}}")
endforeach()
"""
    path = tmp_path / "archs.cmake"
    path.write_text(script)
    out = subprocess.run([_cmake(), "-P", str(path)], capture_output=True, text=True, check=True).stderr
    got = {f: (archs, flags) for f, archs, flags in (line.split("|") for line in out.strip().splitlines())}
    gen = lambda a: f"-gencode=arch=compute_{a},code=sm_{a}"  # noqa: E731
    ptx = lambda a: f"-gencode=arch=compute_{a},code=compute_{a}"  # noqa: E731
    assert got["attention.cu"] == ("80;90;90a", ";".join([gen(80), gen(90), gen("90a"), ptx(90)]))
    assert got["attention_sm90a.cu"] == ("90a", gen("90a"))
    assert got["tma_sm90.cu"] == ("90;90a", ";".join([gen(90), gen("90a"), ptx(90)]))
    assert got["blackwell_sm100a.cu"] == ("", "")


# -------------------------------------------------------- emulated kernels --
needs_emulated = pytest.mark.skipif(not fusedseq.emulated.available(),
                                    reason="this build has no emulated library (FUSEDSEQ_EMULATED=OFF)")


@needs_emulated
@pytest.mark.parametrize("name", ALL_OPS)
def test_emulated_op_has_fusedseqs_schema(name):
    """torch.ops.fusedseq_emulated.<op> is declared from the same schema list."""
    op = getattr(torch.ops.fusedseq_emulated, name).default
    assert str(op._schema) == SCHEMAS[name].replace("fusedseq::", "fusedseq_emulated::", 1)


def test_cuda_and_emulated_ops_come_from_one_list():
    """build_info()["cuda_ops"] and ["emulated_ops"] are both the list the
    kernels are registered from (csrc/bindings/cuda_ops.h); no public op has
    a CUDA kernel yet (issues 10 and 11 add them)."""
    info = fusedseq.build_info()
    assert set(info["emulated_ops"]) <= set(ALL_OPS)
    if info["cuda_compiled"] and info["emulated_compiled"]:
        assert info["cuda_ops"] == info["emulated_ops"]
    for op in info["emulated_ops"]:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"fusedseq_emulated::{op}", "CPU")
    for op in set(ALL_OPS) - set(info["emulated_ops"]):
        if info["emulated_compiled"]:
            assert not torch._C._dispatch_has_kernel_for_dispatch_key(f"fusedseq_emulated::{op}", "CPU")


@needs_emulated
def test_emulated_variant_routes_the_op_to_the_emulated_kernel(make):
    """What the "emulated" device variant does: inside emulated_kernels(),
    torch.ops.fusedseq.<op> on CPU tensors reaches
    torch.ops.fusedseq_emulated.<op>, under the public function, autograd and
    all; outside it, the CPU kernel again. (No op has an emulated kernel yet,
    so a Python stand-in plays the emulated kernel here.)"""
    from conftest import emulated_kernels

    calls = []

    def stand_in(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity):
        calls.append(nonlinearity)
        return torch.tanh(x @ w_ih.t() + h @ w_hh.t())

    lib = torch.library.Library("fusedseq_emulated", "IMPL")
    lib.impl("rnn_cell", stand_in, "CPU")
    try:
        x, h, w_ih, w_hh = make(3, 4), make(3, 5), make(5, 4), make(5, 5)
        ref = torch.tanh(x @ w_ih.t() + h @ w_hh.t())
        with emulated_kernels(["rnn_cell"]):
            out = fusedseq.rnn_cell(x, h, w_ih, w_hh)
        assert calls == ["tanh"]
        torch.testing.assert_close(out, ref)
        fusedseq.rnn_cell(x, h, w_ih, w_hh)
        assert calls == ["tanh"], "the CPU kernel must be back outside the context"
    finally:
        lib._destroy()
