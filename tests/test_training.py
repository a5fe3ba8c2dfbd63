"""fusedseq.training: atomic checkpoints, exact resume, and `fusedseq train`.

The central test kills a real `python -m fusedseq train` process mid-run with
SIGKILL, resumes it, and requires the loss history to be *bitwise* equal to
that of an uninterrupted run with the same seed (CPU, one thread each).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

import fusedseq
from fusedseq.__main__ import main as fusedseq_main
from fusedseq.training import (ConfigMismatchError, CorruptCheckpointError, DamagedCheckpointWarning, Trainer,
                               latest_checkpoint, list_checkpoints, load_checkpoint, load_newest_intact,
                               read_loss_log, sample_windows, save_checkpoint, verify_checkpoint)
from fusedseq.training.checkpoint import prune_checkpoints
from fusedseq.training import checkpoint as checkpoint_module

# Where the imported fusedseq lives: python/ in a checkout, site-packages when
# installed. Subprocesses get it on PYTHONPATH so they run the same code.
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(fusedseq.__file__)))


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine: a second OpenMP thread only
    waits for the first (and, oversubscribed, slows every op 10-100x)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------- a stand-in model --
class TinyLM(nn.Module):
    """Embedding -> dropout -> Linear: the model contract (logits, loss) with
    dropout, so that exact resume depends on restoring torch's global RNG."""

    def __init__(self, vocab: int = 11, width: int = 8, dropout: float = 0.3):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(width, vocab)

    def forward(self, idx, targets=None):
        logits = self.head(self.drop(self.embed(idx)))                     # (B, T, V)
        loss = None if targets is None else nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss


def tiny_data(seed: int, vocab: int = 11, n: int = 400, T: int = 6):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(vocab, (n + 1,), generator=gen)                    # (n+1,)
    inputs = ids[:-1].unfold(0, T, T).contiguous()                         # (W, T)
    targets = ids[1:].unfold(0, T, T).contiguous()                         # (W, T)
    return inputs, targets


def make_trainer(ckpt_dir, *, steps: int, model_seed: int = 0, data_seed: int = 1, every: int = 3,
                 on_step=None, config=None, batch_size: int = 4) -> Trainer:
    torch.manual_seed(model_seed)
    model = TinyLM()
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 4))
    inputs, targets = tiny_data(data_seed)
    return Trainer(model, opt, sample_windows(inputs, targets, batch_size), steps=steps,
                   generator=torch.Generator().manual_seed(7), scheduler=sched, grad_clip=0.5,
                   checkpoint_dir=ckpt_dir, checkpoint_every=every, progress=False,
                   config=config if config is not None else {"lr": 0.05, "batch_size": batch_size},
                   extra_state={"tokenizer": {"itos": ["a", "b"]}}, on_step=on_step)


def temporaries(directory) -> list[str]:
    return [n for n in os.listdir(directory) if n.startswith(".tmp")]


# ------------------------------------------------------------ atomic saving --
def test_failed_rename_leaves_old_checkpoint_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "step_00000001.pt"
    old = {"step": 1, "w": torch.randn(50)}
    save_checkpoint(path, old)

    def rename_fails(src, dst):
        assert os.path.getsize(src) > 0      # the new bytes were written in full, next to the target
        raise OSError("simulated crash between write and rename")

    monkeypatch.setattr(checkpoint_module.os, "replace", rename_fails)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(path, {"step": 2, "w": torch.randn(50)})
    monkeypatch.undo()
    loaded = load_checkpoint(path)
    assert loaded["step"] == 1 and torch.equal(loaded["w"], old["w"])
    assert temporaries(tmp_path) == []


def test_failed_write_leaves_old_checkpoint_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    old = {"step": 3, "w": torch.randn(7, 3)}
    save_checkpoint(path, old)
    real_save = torch.save

    def torn_save(obj, f, *a, **k):
        f.write(b"PK\x03\x04 half a zip file")   # a torn write: some bytes, then the crash
        raise RuntimeError("disk full halfway")

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, {"step": 4, "w": torch.randn(7, 3)})
    monkeypatch.setattr(torch, "save", real_save)
    loaded = load_checkpoint(path)
    assert loaded["step"] == 3 and torch.equal(loaded["w"], old["w"])
    assert temporaries(tmp_path) == []


def test_latest_checkpoint_ignores_temporaries_and_orders_by_step(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    assert latest_checkpoint(tmp_path / "missing") is None
    for step in (9, 10, 100):
        save_checkpoint(tmp_path / f"step_{step:08d}.pt", {"step": step})
    (tmp_path / ".tmp-step_00000200.pt.abc").write_bytes(b"torn")      # an interrupted write
    (tmp_path / "step_00000300.pt.bak").write_bytes(b"not ours")
    assert [s for s, _ in list_checkpoints(tmp_path)] == [9, 10, 100]
    assert load_checkpoint(latest_checkpoint(tmp_path))["step"] == 100
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        load_checkpoint(tmp_path / "step_00000001.pt")
    with pytest.raises(TypeError, match="state must be a dict"):
        save_checkpoint(tmp_path / "x.pt", [1, 2])


# ------------------------------------------------------------ the trainer --
def test_checkpoint_round_trips_every_piece_of_state(tmp_path):
    trainer = make_trainer(tmp_path, steps=5, every=5)
    result = trainer.fit()
    assert result.steps == 5 and len(result.losses) == 5 and result.tokens == 5 * 4 * 6
    assert result.checkpoint == str(tmp_path / "step_00000005.pt")
    state = load_checkpoint(result.checkpoint)
    assert state["step"] == 5
    assert state["losses"] == result.losses == read_loss_log(str(tmp_path / "losses.jsonl"))
    assert state["config"] == {"lr": 0.05, "batch_size": 4}
    assert state["extra"] == {"tokenizer": {"itos": ["a", "b"]}}
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(state["model"][name], value), name
    opt_state = trainer.optimizer.state_dict()["state"]
    assert set(state["optimizer"]["state"]) == set(opt_state)
    for i, s in opt_state.items():
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(state["optimizer"]["state"][i][key], s[key]), (i, key)
    assert state["scheduler"]["last_epoch"] == 5
    assert torch.equal(state["rng"]["batch_generator"], trainer.generator.get_state())
    assert torch.equal(state["rng"]["per_rank"][0]["torch_cpu"], torch.get_rng_state())
    assert state["world_size"] == 1


def test_resume_after_a_crash_is_bitwise_equal(tmp_path):
    full = make_trainer(tmp_path / "full", steps=12).fit()

    def crash(step, loss):
        if step == 8:                       # two steps past the checkpoint at 6
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        make_trainer(tmp_path / "run", steps=12, on_step=crash).fit()
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [3, 6]   # keep_last=2
    assert len(read_loss_log(str(tmp_path / "run" / "losses.jsonl"))) == 8

    torch.manual_seed(12345)                # scramble the global RNG: resume must restore it
    resumed = make_trainer(tmp_path / "run", steps=12, model_seed=99).fit(resume=True)
    assert resumed.start_step == 6 and resumed.steps == 12
    assert resumed.losses == full.losses    # exact float equality, all 12 steps
    assert read_loss_log(str(tmp_path / "run" / "losses.jsonl")) == full.losses
    a = load_checkpoint(tmp_path / "full" / "step_00000012.pt")
    b = load_checkpoint(tmp_path / "run" / "step_00000012.pt")
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    # The losses really depend on the restored state: a fresh run from other
    # weights does not reproduce them.
    assert make_trainer(tmp_path / "other", steps=12, model_seed=99).fit().losses != full.losses


def test_resume_refuses_a_different_config_and_a_missing_checkpoint(tmp_path):
    make_trainer(tmp_path, steps=3).fit()
    with pytest.raises(ConfigMismatchError, match=r"batch_size: checkpoint has 4, this run has 8"):
        make_trainer(tmp_path, steps=6, config={"lr": 0.05, "batch_size": 8}, batch_size=8).fit(resume=True)
    with pytest.raises(FileExistsError, match="already holds checkpoints"):
        make_trainer(tmp_path, steps=6).fit(resume=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        make_trainer(tmp_path / "empty", steps=6).fit(resume=True)


def test_trainer_rejects_bad_arguments(tmp_path):
    model = TinyLM()
    opt = torch.optim.AdamW(model.parameters())
    sample = sample_windows(*tiny_data(0), 4)
    gen = torch.Generator()
    with pytest.raises(ValueError, match="steps must be an int >= 0"):
        Trainer(model, opt, sample, steps=-1, generator=gen)
    with pytest.raises(ValueError, match="grad_clip"):
        Trainer(model, opt, sample, steps=1, generator=gen, grad_clip=0.0)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        Trainer(model, opt, sample, steps=1, generator=0)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        sample_windows(*tiny_data(0), 0)
    with pytest.raises(ValueError, match="same non-empty shape"):
        sample_windows(torch.zeros(3, 4, dtype=torch.long), torch.zeros(3, 5, dtype=torch.long), 2)


# ----------------------------------------------------- `python -m fusedseq train` --
# A tiny transformer with dropout on a third of the shipped corpus would do as
# well; the shipped corpus is small enough to use whole.
TRAIN_ARGS = ["--quick", "--d-model", "32", "--n-layers", "2", "--context-length", "16", "--batch-size", "8",
              "--steps", "40", "--checkpoint-every", "5", "--dropout", "0.1", "--seed", "3", "--no-progress"]


def train_command(out, *extra: str) -> list[str]:
    return [sys.executable, "-m", "fusedseq", "train", *TRAIN_ARGS, "--out", str(out), *extra]


def subprocess_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([PACKAGE_PARENT] + [p for p in [env.get("PYTHONPATH")] if p])
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")   # light, and the same in every run
    return env


def final_losses(out) -> list[float]:
    """The run's loss history three ways, which must agree."""
    metrics = json.loads((out / "metrics.json").read_text())
    log = read_loss_log(str(out / "losses.jsonl"))
    ckpt = load_checkpoint(latest_checkpoint(out))["losses"]
    assert metrics["losses"] == log == ckpt
    return log


def test_sigkill_mid_run_then_resume_gives_the_uninterrupted_losses(tmp_path):
    ref_out, run_out = tmp_path / "uninterrupted", tmp_path / "killed"
    env = subprocess_env()
    # Both start together (two cores); the victim sleeps 50 ms per step so the kill lands mid-run.
    reference = subprocess.Popen(train_command(ref_out), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    victim = subprocess.Popen(train_command(run_out, "--throttle", "0.05"), env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not any(step >= 15 for step, _ in list_checkpoints(run_out)):
            assert victim.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint at step >= 15 within 60 s"
            time.sleep(0.01)
        assert victim.poll() is None, "the run ended before it could be killed"
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(timeout=30) == -signal.SIGKILL
    finally:
        if victim.poll() is None:
            victim.kill()
    killed_at = max(step for step, _ in list_checkpoints(run_out))
    assert 15 <= killed_at < 40 and not (run_out / "metrics.json").exists()
    ref_output = reference.communicate(timeout=120)[0].decode()
    assert reference.returncode == 0, ref_output
    assert "final loss" in ref_output and "tokens/s" in ref_output and "samples" in ref_output

    resumed = subprocess.run(train_command(run_out, "--resume"), env=env, capture_output=True, text=True,
                             timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from step {killed_at}" in resumed.stdout
    expected = final_losses(ref_out)
    assert len(expected) == 40 and expected[-1] < expected[0] - 0.5   # it did learn something
    assert final_losses(run_out) == expected                          # bitwise, every step
    assert temporaries(run_out) == []


def test_cli_resume_errors_are_clear(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--quick", "--steps", "3", "--checkpoint-every", "0", "--no-progress", "--out", str(out)]
    assert fusedseq_main(args + ["--resume"]) == 2
    assert "--resume: no checkpoint" in capsys.readouterr().err

    assert fusedseq_main(args) == 0
    assert [s for s, _ in list_checkpoints(out)] == [3]
    capsys.readouterr()
    assert fusedseq_main(args + ["--resume", "--lr", "0.01", "--batch-size", "4"]) == 2
    err = capsys.readouterr().err
    assert "different configuration" in err and "batch_size: checkpoint has 8, this run has 4" in err
    assert "lr: checkpoint has 0.003, this run has 0.01" in err

    assert fusedseq_main(args) == 2                 # a fresh run must not mix with an old one
    assert "already holds checkpoints" in capsys.readouterr().err
    # Longer on resume is allowed: 3 more steps.
    assert fusedseq_main(args[:3] + ["6"] + args[4:] + ["--resume"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 6 and metrics["resumed_from_step"] == 3 and len(metrics["losses"]) == 6


def test_cli_trains_the_embedding_model(tmp_path, capsys):
    out = tmp_path / "emb"
    assert fusedseq_main(["train", "--model", "embedding", "--quick", "--steps", "30", "--lr", "0.02",
                          "--no-progress", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "nearest words" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "embedding" and len(metrics["neighbours"]) == 3
    assert metrics["losses"][-1] < metrics["losses"][0] - 0.5
    assert metrics["tokens_per_s"] > 0


# ------------------------------------------------------ damaged checkpoints --
def damage(path, how: str) -> None:
    """Truncate, zero, overwrite with garbage, or flip one mantissa bit of a weight."""
    data = bytearray(open(path, "rb").read())
    if how == "truncated":
        data = data[: len(data) // 2]
    elif how == "zeroed":
        data = bytearray(len(data))
    elif how == "garbage":
        data = bytearray(torch.randint(0, 256, (len(data),), generator=torch.Generator().manual_seed(0),
                                       dtype=torch.uint8).numpy().tobytes())
    else:  # "bitflip": the lowest mantissa bit of the first float of the output layer's weight
        weight = load_checkpoint(path)["model"]["head.weight"].numpy().tobytes()
        at = bytes(data).index(weight)
        data[at] ^= 1
    with open(path, "wb") as f:
        f.write(bytes(data))


@pytest.mark.parametrize("how", ["truncated", "zeroed", "garbage", "bitflip"])
def test_resume_skips_a_damaged_newest_checkpoint_with_a_warning(tmp_path, how):
    full = make_trainer(tmp_path / "full", steps=9).fit()
    run = tmp_path / "run"
    make_trainer(run, steps=6).fit()
    assert [s for s, _ in list_checkpoints(run)] == [3, 6]
    damage(run / "step_00000006.pt", how)
    assert verify_checkpoint(run / "step_00000006.pt") is not None
    with pytest.raises(CorruptCheckpointError, match="step_00000006.pt"):
        load_checkpoint(run / "step_00000006.pt")
    with pytest.warns(DamagedCheckpointWarning, match=r"step_00000006\.pt' is damaged.*older step_00000003\.pt"):
        resumed = make_trainer(run, steps=9).fit(resume=True)
    assert resumed.start_step == 3 and resumed.losses == full.losses   # nothing lost but three steps' work
    assert verify_checkpoint(run / "step_00000006.pt") is None         # rewritten by the resumed run


def test_every_checkpoint_damaged_is_one_clear_error(tmp_path):
    make_trainer(tmp_path, steps=6).fit()
    for _, path in list_checkpoints(tmp_path):
        damage(path, "truncated")
    with pytest.raises(CorruptCheckpointError, match=r"every checkpoint in it is damaged(.|\n)*step_00000003"):
        make_trainer(tmp_path, steps=9).fit(resume=True)


def test_pruning_never_deletes_the_newest_intact_checkpoint(tmp_path):
    for step in (1, 3, 6, 9):
        save_checkpoint(tmp_path / f"step_{step:08d}.pt", {"step": step})
    for step in (6, 9):
        damage(tmp_path / f"step_{step:08d}.pt", "truncated")
    deleted = prune_checkpoints(tmp_path, keep_last=2)
    assert [os.path.basename(p) for p in deleted] == ["step_00000001.pt"]
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3, 6, 9]
    with pytest.warns(DamagedCheckpointWarning):
        assert load_newest_intact(tmp_path)[1]["step"] == 3


def test_checkpoints_are_written_with_the_usual_permissions(tmp_path):
    path = save_checkpoint(tmp_path / "step_00000001.pt", {"step": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


def test_cli_resume_warns_about_a_damaged_checkpoint_and_goes_on(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--quick", "--steps", "6", "--checkpoint-every", "3", "--no-progress", "--out", str(out)]
    assert fusedseq_main(args) == 0
    damage(out / "step_00000006.pt", "zeroed")
    capsys.readouterr()
    assert fusedseq_main(args[:3] + ["9"] + args[4:] + ["--resume"]) == 0
    captured = capsys.readouterr()
    assert "warning: checkpoint" in captured.err and "step_00000006.pt' is damaged" in captured.err
    assert "resumed from step 3" in captured.out and "Traceback" not in captured.err
    all_damaged = ["train", "--quick", "--steps", "9", "--no-progress", "--out", str(out), "--resume"]
    for _, path in list_checkpoints(out):
        damage(path, "garbage")
    assert fusedseq_main(all_damaged) == 2
    assert "every checkpoint in it is damaged" in capsys.readouterr().err


# ------------------------------------------------ Ctrl-C and non-finite losses --
def test_ctrl_c_stops_at_a_step_boundary_and_saves(tmp_path):
    def interrupt(step, loss):
        if step == 4:
            os.kill(os.getpid(), signal.SIGINT)   # delivered to the main thread, as Ctrl-C is

    result = make_trainer(tmp_path, steps=12, every=100, on_step=interrupt).fit()
    assert result.interrupted and result.steps == 4
    assert result.checkpoint == str(tmp_path / "step_00000004.pt") and verify_checkpoint(result.checkpoint) is None
    resumed = make_trainer(tmp_path, steps=12, every=100).fit(resume=True)
    assert resumed.start_step == 4 and not resumed.interrupted
    assert resumed.losses == make_trainer(tmp_path / "full", steps=12, every=100).fit().losses


def test_ctrl_c_on_the_command_line_saves_and_prints_the_resume_command(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(train_command(out, "--throttle", "0.05", "--checkpoint-every", "100"),
                            env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / "losses.jsonl").exists() or len((out / "losses.jsonl").read_text().splitlines()) < 3:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    step = max(s for s, _ in list_checkpoints(out))
    assert 3 <= step < 40 and f"interrupted after step {step}" in stdout
    hint = stdout.split("to continue:\n")[1].strip()
    assert hint.startswith("python -m fusedseq train ") and hint.endswith("--resume") and str(out) in hint
    resumed = subprocess.run([sys.executable, *hint.split()[1:]], env=subprocess_env(), capture_output=True,
                             text=True, timeout=120)
    assert resumed.returncode == 0 and f"resumed from step {step}" in resumed.stdout, resumed.stderr


def test_a_non_finite_loss_raises_before_the_weights_change(tmp_path):
    trainer = make_trainer(tmp_path, steps=6, every=100)
    snapshot = {}

    def poison_after(step, loss):
        if step == 2:
            snapshot.update({k: v.clone() for k, v in trainer.model.state_dict().items()})
            with torch.no_grad():
                trainer.model.head.bias.fill_(float("inf"))   # the next loss is not finite
            snapshot["head.bias"] = trainer.model.head.bias.clone()

    trainer.on_step = poison_after
    with pytest.raises(FloatingPointError, match="loss is nan at step 3; the weights are left as after step 2"):
        trainer.fit()
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(value, snapshot[name]), name          # optimizer.step() never ran
    assert all(s["step"].item() == 2 for s in trainer.optimizer.state_dict()["state"].values())


# ------------------------------------------------------------- train options --
def test_cli_threads_and_grouped_query_heads(tmp_path, capsys):
    out = tmp_path / "gqa"
    before = torch.get_num_threads()
    assert fusedseq_main(["train", "--quick", "--steps", "4", "--n-heads", "4", "--n-kv-heads", "2", "--d-model",
                          "32", "--threads", "2", "--no-progress", "--out", str(out)]) == 0
    assert "threads=2" in capsys.readouterr().out and torch.get_num_threads() == before
    state = load_checkpoint(latest_checkpoint(out))
    assert state["config"]["n_kv_heads"] == 2 and state["config"]["n_heads"] == 4
    assert state["model"]["blocks.0.attn.kv_proj.weight"].shape[0] == 2 * 2 * 8   # k and v: 2 heads of 8
    assert fusedseq_main(["train", "--quick", "--n-heads", "4", "--n-kv-heads", "3", "--out", str(tmp_path / "x")]) == 2
    assert "--n-kv-heads 3 must divide --n-heads 4" in capsys.readouterr().err
