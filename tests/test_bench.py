"""The benchmark harness's logic (no timing is asserted): stability verdicts,
re-measuring, how an untrusted ratio is shown, failure isolation, the float64
check, the CUDA timing path (events and the L2 flush, with stand-ins on the
CPU), the cuDNN column, the loaded-machine case's busy loops, the CLI, and
the attention variants' cases at their quick shapes."""
from __future__ import annotations

import argparse
import json
import types

import pytest
import torch

from fusedseq.bench import Budget, Path, Setup, cli, harness, report, timing
from fusedseq.bench.cases import recurrent
from fusedseq.bench.harness import MODES, REGISTRY, Case, case, run_case
from fusedseq.bench.timing import LoadMeter, Timing

TINY = Budget(seconds=0.002, min_runs=3, warmup_s=0.0, retries=2)


def test_verdicts():
    assert Timing.of([[1.0, 1.01, 0.99]] * 3).unstable == ""
    assert "rounds differ 2.0x" in Timing.of([[1.0] * 3, [2.0] * 3, [1.0] * 3]).unstable
    assert "IQR" in Timing.of([[1.0, 2.0, 1.0, 2.0]] * 3).unstable


def test_page_faults_per_call_are_counted_and_shown(monkeypatch):
    """A path that writes a fresh 64 MiB buffer every call (glibc maps it anew
    each time) shows its first-touch page faults on its row; one that
    allocates nothing large shows next to none."""
    @case("faulty", primary="torch", work=lambda p, mode: (p["n"], "FLOP"), shapes={"cpu": [{"n": 64}]})
    def build(make, n):
        x = make(n)

        def fresh_buffer():
            torch.empty(16 << 20).fill_(1.0)  # 64 MiB of float32, every page touched
            return x * 2
        return Setup([x], {"fused": lambda: x * 2, "torch": fresh_buffer}, reference=lambda t: 2 * t)
    try:
        rows = {r.impl: r for r in run_case(Case(REGISTRY["faulty"], torch.device("cpu"), torch.float32,
                                                 {"n": 64}, ("fwd",)), TINY)}
    finally:
        del REGISTRY["faulty"]
    fresh, quiet = rows["torch"].timing.faults_per_call, rows["fused"].timing.faults_per_call
    assert fresh >= 30, fresh  # 16384 with 4 KiB pages, 32 with 2 MiB ones
    assert quiet < fresh / 10, (quiet, fresh)
    table = report.format_table(list(rows.values()))
    assert "faults/call" in table.splitlines()[0]


def test_load_meter_blames_other_processes(monkeypatch):
    reads = iter([(0.0, 100.0, 10.0), (1.0, 102.0, 10.5)])   # 2 s of CPU in 1 s, 0.5 s of it ours
    monkeypatch.setattr(LoadMeter, "_read", staticmethod(lambda: next(reads)))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    monkeypatch.setattr(timing.os, "cpu_count", lambda: 2)
    assert LoadMeter().verdict() == "load: other processes used 1.5 of 2 cores"


@pytest.fixture
def toy(monkeypatch):
    """A registered toy op: y = 2x, with a wrong path, a failing one and one that cannot run."""
    @case("toy", primary="torch", work=lambda p, mode: (p["n"], "FLOP"), shapes={"cpu": [{"n": 64}]})
    def build(make, n):
        x = make(n)
        return Setup([x], {"fused": lambda: x * 2, "torch": lambda: x + x, "wrong": lambda: x * 2.5,
                           "broken": lambda: 1 / 0, "absent": "needs a GPU"},
                     reference=lambda t: 2 * t)
    yield REGISTRY["toy"]
    del REGISTRY["toy"]


def run_toy(op, modes=("fwd", "fwd+bwd")):
    return run_case(Case(op, torch.device("cpu"), torch.float32, {"n": 64}, modes), TINY)


def test_rows_checks_and_failure_isolation(toy):
    rows = {(r.mode, r.impl): r for r in run_toy(toy)}
    for mode in ("fwd", "fwd+bwd"):
        assert rows[mode, "fused"].max_abs == 0.0 and rows[mode, "torch"].rel == 0.0
        assert rows[mode, "wrong"].rel == pytest.approx(0.25 if mode == "fwd" else 0.25)
        assert rows[mode, "broken"].status == "error" and "ZeroDivisionError" in rows[mode, "broken"].note
        assert rows[mode, "absent"].status == "skipped" and rows[mode, "absent"].note == "needs a GPU"
        assert rows[mode, "fused"].vs in ("torch", "wrong") and rows[mode, "torch"].speedup is not None


def test_unstable_rows_are_remeasured_then_marked(toy, monkeypatch):
    calls = []

    def fake_interleave(contenders, device, rounds):
        calls.append(1)
        for i, c in enumerate(contenders):
            erratic = len(calls) == 1 or i == 0          # fused stays erratic; the others settle
            c.rounds = [[1e-3], [5e-3 if erratic else 1e-3], [1e-3]]
        return None

    monkeypatch.setattr(harness, "interleave", fake_interleave)
    rows = [r for r in run_toy(toy, ("fwd",)) if r.timing]
    assert len(calls) == 1 + TINY.retries
    fused = next(r for r in rows if r.fused)
    assert "rounds differ" in fused.unstable and not fused.trusted and fused.remeasured == TINY.retries
    assert all(not r.trusted for r in rows)            # every ratio involves the fused time
    table, summary = report.format_table(rows), report.format_summary(rows)
    assert "x)?" in table and "UNSTABLE: rounds differ" in table and "unstable" in summary
    assert not any(f"{r.speedup:.2f}x " in summary for r in rows if r.speedup)


def test_a_stable_retry_is_trusted(toy, monkeypatch):
    tries = []

    def fake_interleave(contenders, device, rounds):
        tries.append(1)
        for c in contenders:
            c.rounds = [[1e-3], [5e-3 if len(tries) == 1 else 1e-3], [1e-3]]
        return None

    monkeypatch.setattr(harness, "interleave", fake_interleave)
    fused = next(r for r in run_toy(toy, ("fwd",)) if r.fused)
    assert fused.trusted and fused.remeasured == 1 and len(tries) == 2
    assert "stable on try 2" in report.format_table([fused])


def test_plot_leaves_untrusted_ratios_out(toy, tmp_path, monkeypatch):
    rows = [r for r in run_toy(toy, ("fwd",))]
    for r in rows:
        r.trusted = r.impl != "wrong"
    assert report.plot(rows, str(tmp_path / "p.png"))
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_cuda_timing_flushes_l2_before_every_call(monkeypatch):
    """The CUDA path with stand-in events: one flush per call, each outside its event pair."""
    log = []

    class Event:
        def __init__(self, enable_timing):
            self.t = None

        def record(self):
            log.append("record")
            self.t = len(log)

        def elapsed_time(self, end):
            return float(end.t - self.t)

    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    samples = timing.sample(lambda: log.append("call"), 4, torch.device("cuda"), flush=lambda: log.append("flush"))
    assert log == ["flush", "record", "call", "record"] * 4 and samples == [2e-3] * 4


def test_cudnn_column_follows_pytorchs_rule(monkeypatch):
    props = types.SimpleNamespace(major=9, minor=0, multi_processor_count=132)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: props)
    algo = lambda H, dtype=torch.float16, B=64, bwd=False: recurrent.cudnn_algo(100, B, H, H, dtype, bwd, "cuda")  # noqa
    assert algo(384) == "small_h" and algo(384, bwd=True) == "static" and algo(1024) == "static"
    assert algo(1024, B=96) == "std" and algo(1024, B=12) == "std"      # B >= 96 with H >= 896; B % 8
    assert algo(1024, dtype=torch.float32) == "std" and algo(128, dtype=torch.float64) == "std"


def test_busy_cores_are_ended(monkeypatch):
    started = []
    real = timing.subprocess.Popen
    monkeypatch.setattr(timing.subprocess, "Popen", lambda *a, **k: started.append(real(*a, **k)) or started[-1])
    monkeypatch.setattr(timing.time, "sleep", lambda s: None)
    with timing.busy_cores(2):
        assert len(started) == 2 and all(p.poll() is None for p in started)
    assert all(p.poll() is not None for p in started)


def test_cli_shape_sweep_and_selection():
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--ops", "attention,rnn", "--shape", "N=64,128 causal=yes Hkv=1", "--device", "cpu"])
    cases, _ = cli.collect(args)
    assert [(c.op.name, c.params["N"], c.params["causal"], c.params["Hkv"]) for c in cases] == \
        [("attention", 64, True, 1), ("attention", 128, True, 1)]   # rnn takes no N: left out
    assert cases[0].params["D"] == 64 and cases[0].modes == ["fwd", "fwd+bwd"]
    with pytest.raises(SystemExit):
        cli.collect(parser.parse_args(["--ops", "rnn", "--shape", "N=64"]))


def test_cli_quick_run_writes_json_and_logs_progress(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert cli.main(["--quick", "--ops", "attention", "--mode", "fwd", "--shape", "causal=no", "--threads", "1",
                     "--json", str(out)]) == 0
    captured = capsys.readouterr()
    assert "1 CPU threads (--threads)" in captured.out and "== summary" in captured.out
    assert "[1/1] attention cpu B=1 H=2 N=128 D=32" in captured.err        # a line per case, not a bar
    doc = json.loads(out.read_text())
    rows = {r["impl"]: r for r in doc["results"]}
    assert {"fused", "sdpa", "sdpa[FLASH_ATTENTION]", "sdpa[MATH]", "eager"} <= set(rows)
    for r in rows.values():
        assert r["status"] == "ok" and r["rel"] < 1e-5 and "unstable" in r and len(r["timing"]["round_medians"]) == 3
    assert doc["metadata"]["cpu"]["threads"] == 1


@pytest.mark.emulated
def test_cli_emulated_runs_the_cuda_case_end_to_end(tmp_path, capsys):
    """--emulated: the attention case's CUDA dtype and its fusedseq op's CUDA
    kernels, on the host emulator, so that a GPU run does not debug the harness."""
    import fusedseq.emulated
    if not {"attention_fwd", "attention_bwd"} <= set(fusedseq.emulated.ops()):
        pytest.skip("no emulated attention kernels in this build")
    out = tmp_path / "e.json"
    assert cli.main(["--emulated", "--ops", "attention", "--dtype", "bf16", "--shape", "causal=yes", "--threads", "1",
                     "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    fused = [r for r in doc["results"] if r["impl"] == "fused"]
    assert {r["mode"] for r in fused} == {"fwd", "fwd+bwd"}
    for r in fused:
        assert r["status"] == "ok" and r["dtype"] == "bfloat16" and r["rel"] < 1e-2


def _collect(*argv):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return cli.collect(parser.parse_args(list(argv)))[0]


def test_attention_variants_run_at_quick_shapes():
    """Each variant's quick case, plus random_mask, a window narrower than N and a
    4-sequence grouped-query varlen (SDPA's padding and unpadding): both paths, every
    mode, within fp32 of the float64 reference; decoding is forward only."""
    cases = _collect("--quick", "--ops", "attention_variants", "--device", "cpu")
    op = REGISTRY["attention_variants"]
    cases += [Case(op, torch.device("cpu"), torch.float32, p, list(MODES))
              for p in (dict(variant="random_mask", B=2, H=2, N=64, Nk=96, D=16),
                        dict(variant="window", B=1, H=2, N=64, D=16, window=16),
                        dict(variant="varlen", B=4, H=4, Hkv=2, N=64, D=16))]
    assert [c.params["variant"] for c in cases] == ["plain", "keypad", "window", "varlen", "decode", "random_mask",
                                                    "window", "varlen"]
    for c in cases:
        rows = run_case(c, TINY)
        modes = ("fwd",) if c.params["variant"] == "decode" else MODES
        assert sorted((r.mode, r.impl) for r in rows) == sorted((m, i) for m in modes for i in ("fused", "sdpa"))
        for r in rows:
            assert r.status == "ok", (c.label, r.impl, r.mode, r.note)
            assert r.rel < 1e-5 and r.work == op.work(c.params, r.mode)[0] > 0, (c.label, r.impl, r.mode, r.rel)
    assert [c.params["variant"] for c in _collect("--quick", "--ops", "attention_variants", "--mode", "fwd+bwd")] \
        == ["plain", "keypad", "window", "varlen"]                       # no decode rows to run


def test_attention_variants_count_the_visible_pairs():
    work = lambda **p: REGISTRY["attention_variants"].work({"B": 2, "H": 3, "D": 8, **p}, "fwd")[0]  # noqa: E731
    per_pair = 4 * 8 * 2 * 3                                             # 4·D FLOPs per (b, query head) pair
    assert work(variant="plain", N=100, Nk=40) == per_pair * 100 * 40
    assert work(variant="decode", N=1, Nk=4096) == per_pair * 4096
    assert work(variant="keypad", N=100, Nk=40) == per_pair * 100 * 30
    assert work(variant="random_mask", N=100, Nk=40) == per_pair * 100 * 20
    assert work(variant="window", N=1024, window=128) == per_pair * (128 * 129 / 2 + (1024 - 128) * 128)
    # varlen: B sequences of N, N/2, 3N/4, N/4 tokens, each a causal triangle, not B times the longest
    assert work(variant="varlen", N=64) == 4 * 8 * 3 * (64 * 65 + 32 * 33) / 2
    assert REGISTRY["attention_variants"].work({"variant": "plain", "B": 1, "H": 1, "N": 4, "D": 8}, "fwd+bwd")[0] \
        == 3.5 * 4 * 8 * 16


@pytest.mark.emulated
def test_cli_emulated_runs_the_cuda_rnn_kernels_at_a_tiny_shape(tmp_path, capsys):
    """`--emulated`: the CPU rows' fused path is the RNN ops' CUDA source on the
    host emulator (issue 11: the harness runs on the emulator in CI)."""
    import fusedseq.emulated
    if not {"rnn", "rnn_backward", "rnn_cell", "rnn_cell_backward"} <= set(fusedseq.emulated.ops()):
        pytest.skip("this build has no emulated RNN kernels")
    out = tmp_path / "b.json"
    assert cli.main(["--quick", "--ops", "rnn,rnn_cell", "--device", "cpu", "--emulated", "--dtype", "fp32",
                     "--threads", "1", "--json", str(out)]) == 0
    assert "host emulator" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert doc["metadata"]["emulated"] is True
    fused = [r for r in doc["results"] if r["impl"] == "fused"]
    assert {r["op"] for r in fused} == {"rnn", "rnn_cell"} and len(fused) == 4  # fwd and fwd+bwd each
    for r in fused:
        assert r["status"] == "ok" and r["rel"] < 1e-5


def test_lstm_gru_cases_run_at_quick_shapes():
    """The LSTM and GRU rows (cells and sequences): every path in both modes runs,
    agrees with the float64 reference to fp32 rounding, and counts G·2·B·H·(I+H)
    FLOPs per step (G = 4 gates for the LSTM, 3 for the GRU)."""
    cases = _collect("--quick", "--ops", "lstm_cell,lstm,gru_cell,gru", "--device", "cpu")
    assert [c.op.name for c in cases] == ["lstm_cell", "lstm", "gru_cell", "gru"]
    for c in cases:
        kind, cell = c.op.name.removesuffix("_cell"), c.op.name.endswith("_cell")
        module = {"lstm": "LSTM", "gru": "GRU"}[kind] + ("Cell" if cell else "")
        paths = ("fused", f"nn.{module}", "eager") if cell else ("fused", f"nn.{module}", f"loop nn.{module}Cell")
        assert c.op.primary == f"nn.{module}"
        rows = run_case(c, TINY)
        assert sorted((r.mode, r.impl) for r in rows) == sorted((m, i) for m in MODES for i in paths)
        p = c.params
        flops = {"lstm": 4, "gru": 3}[kind] * 2 * p["B"] * p["H"] * (p["I"] + p["H"]) * p.get("T", 1)
        for r in rows:
            assert r.status == "ok", (c.label, r.impl, r.mode, r.note)
            assert r.rel < 1e-5, (c.label, r.impl, r.mode, r.rel)
            assert r.work == (flops if r.mode == "fwd" else 3 * flops)
