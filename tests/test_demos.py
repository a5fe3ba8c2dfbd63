"""The five examples (SPEC §3), each run in --quick mode through the command
line entry point, ``python -m fusedseq demo NAME``: it must write valid PNGs
and metrics.json to --out and reach its key numbers. Plus the command line's
answers to bad arguments.

A demo whose module is not written yet is skipped, with the reason.
"""
from __future__ import annotations

import json
import math
import os
import struct

import pytest

from fusedseq.__main__ import main
from fusedseq.demos import DEMOS, DemoUnavailableError, is_available, load_demo

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_menu(m: dict) -> None:
    # Hand-set weights reproduce every rule exactly; the hidden state stays one-hot.
    assert m["rule_accuracy"] == 1.0
    assert m["cycle_accuracy"] == 1.0
    assert m["hand_set_accuracy"] == 1.0
    assert m["hand_set_state_one_hot"] is True
    # Learned from the record, right on every recorded day and on a year it never saw.
    assert m["learned_train_accuracy"] == 1.0
    assert m["learned_test_accuracy"] == 1.0
    assert m["test_days"] == 365


def _check_dynamics(m: dict) -> None:
    assert m["mse_ar"] < 0.1 * m["mse_persistence"]  # AR is a real baseline
    for net in ("rnn", "lstm", "gru"):
        # About the RNN's number of weights.
        assert abs(m[f"{net}_weights"] - m["rnn_weights"]) <= 0.05 * m["rnn_weights"], net
        # One-step forecasts: each network beats persistence by far, and AR.
        assert m[f"{net}_over_persistence"] < 0.05, (net, m[f"{net}_over_persistence"])
        assert m[f"{net}_over_ar"] < 1.0, (net, m[f"{net}_over_ar"])
        # Fed its own predictions it stays on the attractor (|x| about 2.3 at most in these units).
        assert m[f"rollout_max_abs_{net}"] < 4.0, net
        assert m[f"rollout_horizon_{net}_median"] > m["rollout_horizon_ar_median"], net
        # The hidden states' 3-D projection is a faithful picture of the attractor (y and z were never seen).
        for c in "xyz":
            assert m[f"{net}_pca3_neighbour_r2_{c}"] > 0.95, (net, c, m[f"{net}_pca3_neighbour_r2_{c}"])
    for c in "xyz":
        assert m[f"ae_latent_neighbour_r2_{c}"] > 0.5, (c, m[f"ae_latent_neighbour_r2_{c}"])


def _check_text(m: dict) -> None:
    """embeddings, attention and lm: trained, and scored on held-out sentences."""
    assert math.isfinite(m["final_train_loss"])
    assert 0.0 <= m["test_accuracy"] <= 1.0
    if "optimal_accuracy" in m:     # the default corpus: the grammar's optimum is known
        assert m["test_accuracy"] <= m["optimal_accuracy"] + 1e-9


def _check_embeddings(m: dict) -> None:
    _check_text(m)
    assert m["top5_same_category"] > m["top5_same_category_chance"]


def _check_attention(m: dict) -> None:
    _check_text(m)


def _check_lm(m: dict) -> None:
    _check_text(m)
    assert m["generated_sentences"] >= 1
    assert 0.0 <= m["generated_accepted_share"] <= 1.0


KEY_METRICS = {"menu": _check_menu, "dynamics": _check_dynamics, "embeddings": _check_embeddings,
               "attention": _check_attention, "lm": _check_lm}

# What each demo must draw, at least (file names are the demo's own choice otherwise).
EXPECTED_PNGS = {"menu": {"menu_matrices.png", "menu_learned.png", "menu_over_time.png"},
                 "dynamics": {"dynamics_forecast.png", "dynamics_attractor.png"}}


def _png_size(path) -> tuple[int, int]:
    """Width and height from a PNG's header; fails unless it is a PNG."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_every_demo_has_a_check():
    assert set(KEY_METRICS) == set(DEMOS)


@pytest.mark.parametrize("name", list(DEMOS))
def test_demo_quick_run_writes_pngs_and_metrics(name, tmp_path, capsys):
    if not is_available(name):
        pytest.skip(f"demo {name!r}: module {DEMOS[name]} is not written yet")
    out = tmp_path / name
    rc = main(["demo", name, "--quick", "--out", str(out), "--seed", "0"])
    assert rc == 0
    printed = capsys.readouterr().out

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["out"] == str(out)
    pngs = metrics["pngs"]
    assert pngs, "a demo draws at least one PNG"
    written = {p.name for p in out.glob("*.png")}
    assert {str(out / n) for n in written} == set(pngs), "every PNG written is listed, and only those"
    assert EXPECTED_PNGS.get(name, set()) <= written
    umask = os.umask(0)
    os.umask(umask)
    for p in [*out.glob("*.png"), out / "metrics.json"]:
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask, f"{p.name}: mode {oct(p.stat().st_mode & 0o777)}"
    for p in out.glob("*.png"):
        width, height = _png_size(p)
        assert width >= 200 and height >= 200, (p.name, width, height)
        assert p.stat().st_size > 5000, f"{p.name} is nearly empty"
    assert not list(out.glob(".tmp-*")), "temporary files left behind"

    # Every metric is printed as an aligned "name: value" line.
    for key in metrics:
        assert f"\n{key}:" in printed, f"metric {key} not printed"
    KEY_METRICS[name](metrics)


def test_demo_is_deterministic_given_the_seed(tmp_path, capsys):
    """The same seed gives the same numbers, however many threads; another seed, another record."""
    results = []
    for tag, threads in (("a", "1"), ("b", "2")):
        assert main(["demo", "menu", "--quick", "--steps", "20", "--out", str(tmp_path / tag), "--seed", "3",
                     "--threads", threads]) == 0
        metrics = json.loads((tmp_path / tag / "metrics.json").read_text())
        results.append({k: v for k, v in metrics.items() if k not in ("seconds", "out", "pngs")})
    assert results[0] == results[1]

    from fusedseq.demos import _common, menu
    same = [menu.random_weather(_common.numpy_rng(3), 50) for _ in range(2)]
    other = menu.random_weather(_common.numpy_rng(4), 50)
    assert same[0] == same[1] and same[0] != other


@pytest.mark.parametrize("argv, message", [
    (["demo", "nosuchdemo"], "invalid choice: 'nosuchdemo'"),
    (["demo"], "NAME"),
    (["demo", "menu", "--backend", "cuda"], "invalid choice: 'cuda'"),
    (["demo", "menu", "--device", "gpu"], "expected cpu, cuda or cuda:N"),
    (["demo", "menu", "--seed", "-1"], "expected an integer >= 0"),
    (["demo", "menu", "--steps", "0"], "expected an integer >= 1"),
    (["demo", "dynamics", "--lr", "nan"], "expected a finite number > 0"),
])
def test_bad_arguments_exit_2_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_cuda_without_cuda_is_a_clear_error(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    rc = main(["demo", "menu", "--quick", "--device", "cuda", "--out", str(tmp_path)])
    assert rc == 2
    assert "--device cuda: CUDA is not available" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.png"))


def test_demo_help_lists_its_own_options(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "dynamics", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in ("--samples", "--epochs", "--rollout", "--out", "--device", "--backend", "--seed", "--quick"):
        assert option in text


def test_load_demo_errors():
    with pytest.raises(ValueError, match="unknown demo 'pie'; choose from menu, dynamics"):
        load_demo("pie")
    with pytest.raises(TypeError, match="demo name must be a str"):
        load_demo(3)
    assert issubclass(DemoUnavailableError, RuntimeError)


def test_a_demo_not_written_yet_is_listed_and_reported(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(DEMOS, "ghost", "fusedseq.demos.ghost_that_does_not_exist")
    assert not is_available("ghost")
    with pytest.raises(DemoUnavailableError, match="does not exist yet"):
        load_demo("ghost")
    # The parser still builds (every other command keeps working) and the demo answers with the reason.
    assert main(["demo", "ghost", "--out", str(tmp_path)]) == 1
    assert "demo 'ghost' is not available" in capsys.readouterr().err


# ------------------------------------------------------------------- plots --
def _drawn(monkeypatch):
    """Captures the figures the demos save (and still saves them)."""
    from fusedseq.demos import _common

    figures, save = {}, _common.save_figure

    def capture(fig, out_dir, filename, **kw):
        figures[filename] = fig
        return save(fig, out_dir, filename, **kw)

    monkeypatch.setattr(_common, "save_figure", capture)
    return figures


def test_attention_maps_have_a_colour_bar(tmp_path, monkeypatch, capsys):
    figures = _drawn(monkeypatch)
    assert main(["demo", "attention", "--quick", "--out", str(tmp_path)]) == 0
    fig = figures["attention_maps.png"]
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 1 and "attention weight" in bars[0].get_ylabel()


def test_embedding_map_labels_never_overlap(tmp_path, monkeypatch, capsys):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figures = _drawn(monkeypatch)
    assert main(["demo", "embeddings", "--quick", "--out", str(tmp_path)]) == 0
    fig = figures["embeddings_map.png"]
    renderer = FigureCanvasAgg(fig).get_renderer()
    labels = [t for t in fig.axes[0].texts if t.get_visible()]
    boxes = [t.get_window_extent(renderer) for t in labels]
    assert len(labels) >= 10
    assert not [(a.get_text(), b.get_text()) for i, (a, ba) in enumerate(zip(labels, boxes))
                for b, bb in zip(labels[i + 1:], boxes[i + 1:]) if ba.overlaps(bb)]


def test_saved_figures_keep_labels_outside_the_axes(tmp_path):
    """A tick label reaching past the figure's edge is kept (the image grows), not clipped."""
    from matplotlib.image import imread

    from fusedseq.demos._common import new_figure, save_figure

    fig = new_figure(2.0, 2.0)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_xticks([0, 1], ["a very long word that sticks out", "b"], rotation=90)
    ax.set_ylabel("a label")
    height, width = imread(save_figure(fig, str(tmp_path), "f.png", dpi=100)).shape[:2]
    assert height > 250   # 2 inches at 100 dpi is 200 px: the rotated label was kept
