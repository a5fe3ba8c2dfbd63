"""Menu of the day: from a matrix times a one-hot vector to a recurrent network.

A cook picks the dish of the day. The weather is sunny or rainy, written as a
one-hot vector (sunny = [1, 0], rainy = [0, 1]); a dish is a one-hot vector too.

(a) The first rule -- sunny -> pie, rainy -> hamburger -- is a 2x2 matrix
    times today's weather vector: input only.
(b) The obsessive cook serves pie, hamburger, soup, pie, ... whatever the
    weather: a permutation matrix times yesterday's dish: state only.
(c) The real cook keeps the cycle but the weather bends it. On a sunny day he
    spends the day outside and serves yesterday's dish again (leftovers); on a
    rainy day he stays in and cooks the next dish of the cycle. Today's dish
    needs today's weather AND yesterday's dish: input and state together,
    which is an RNN, h_t = relu(W_ih x_t + b_ih + W_hh h_(t-1) + b_hh).

All three run through the same fusedseq RNN with weights set by hand: (a) is
the RNN with W_hh = 0, (b) the RNN with W_ih = 0. For (c) one unit per dish is
not enough -- "dish d today" is an OR of two ANDs (sunny and d yesterday, or
rainy and the dish before d yesterday), which no single threshold unit
computes -- so the hand-set RNN has one relu unit per (dish, weather) pair:
unit (d, w) fires, with value exactly 1, when today is w and the rule gives d.
Its pre-activation is [weather is w] + [yesterday's dish leads to d under w] - 1,
which is 1 when both hold and <= 0 otherwise, so the state stays exactly
one-hot for ever, and a readout summing each dish's two units names the dish.
It reproduces the recorded menu exactly.

Then the same behaviour is learned by backprop from the record alone: an RNN
(tanh) plus a linear readout, trained with cross-entropy and Adam on windows
of a 1000-day record (each window starts from a learned state for the dish
served the day before it), and tested on a year of weather it never saw, as
one unbroken sequence: it must hold the right dish for 365 days, not only
for the 32-day windows it trained on (see ``train_learned_cook`` for what
makes that reliable).

Plots: the weights as matrices (menu_matrices.png, menu_learned.png) and the
menu over time, recorded vs predicted (menu_over_time.png).
"""
from __future__ import annotations

import argparse
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..nn.rnn import RNN
from . import _common

NAME = "menu"
HELP = "the cook: a rule, a cycle and an RNN with hand-set, then learned, weights"

WEATHER = ("sunny", "rainy")
WEATHER_SYMBOL = ("\u2600", "\u2602")   # sun, umbrella (DejaVu Sans has both)
DISHES = ("pie", "hamburger", "soup")   # in the order of the cook's cycle
SUNNY, RAINY = 0, 1

# (unit index) -> (dish, weather) for the hand-set RNN: unit d * 2 + w.
UNITS = tuple((d, w) for d in range(len(DISHES)) for w in range(len(WEATHER)))
UNIT_LABELS = tuple(f"{DISHES[d]}|{WEATHER[w]}" for d, w in UNITS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--days", type=_common.positive_int, default=1000,
                        help="length of the recorded menu the model learns from (default: %(default)s)")
    parser.add_argument("--test-days", type=_common.positive_int, default=365,
                        help="unseen days to test the learned cook on (default: %(default)s)")
    parser.add_argument("--steps", type=_common.positive_int, default=None,
                        help="training steps (default 600; 300 with --quick)")
    parser.add_argument("--hidden", type=_common.positive_int, default=16,
                        help="hidden units of the learned RNN (default: %(default)s)")
    parser.add_argument("--lr", type=_common.positive_float, default=0.03,
                        help="Adam learning rate (default: %(default)s)")


# ----------------------------------------------------------------- the cooks --
def rule_cook(weather: list[int]) -> list[int]:
    """(a) sunny -> pie, rainy -> hamburger."""
    return [DISHES.index("pie") if w == SUNNY else DISHES.index("hamburger") for w in weather]


def obsessive_cook(start_dish: int, days: int) -> list[int]:
    """(b) the next dish of the cycle every day, starting after ``start_dish``."""
    return [(start_dish + t + 1) % len(DISHES) for t in range(days)]


def real_cook(weather: list[int], start_dish: int) -> list[int]:
    """(c) sunny: yesterday's dish again; rainy: the next dish of the cycle."""
    menu, dish = [], start_dish
    for w in weather:
        dish = dish if w == SUNNY else (dish + 1) % len(DISHES)
        menu.append(dish)
    return menu


def random_weather(rng, days: int) -> list[int]:
    """Independent days, half sunny on average."""
    return [int(w) for w in rng.integers(0, len(WEATHER), size=days)]


# ------------------------------------------------------- hand-set weights --
def rule_matrix() -> Tensor:
    """(2 dishes, 2 weathers): column w is the one-hot of the dish for weather w."""
    return torch.tensor([[1.0, 0.0],     # pie       <- sunny
                         [0.0, 1.0]])    # hamburger <- rainy


def cycle_matrix() -> Tensor:
    """(3, 3) permutation: column d (yesterday) has its 1 on row d + 1 (today)."""
    n = len(DISHES)
    m = torch.zeros(n, n)
    for d in range(n):
        m[(d + 1) % n, d] = 1.0
    return m


def real_cook_weights() -> dict[str, Tensor]:
    """Weights of the hand-set real-cook RNN (6 relu units, one per (dish, weather)).

    Returns w_ih (6, 2), w_hh (6, 6), b_ih (6,), b_hh (6,) and the readout (3, 6)."""
    n_units = len(UNITS)
    w_ih = torch.zeros(n_units, len(WEATHER))
    w_hh = torch.zeros(n_units, n_units)
    for i, (d, w) in enumerate(UNITS):
        w_ih[i, w] = 1.0                                       # today is w
        # The dish yesterday that leads to d under weather w.
        source = d if w == SUNNY else (d - 1) % len(DISHES)
        for j, (d_prev, _) in enumerate(UNITS):
            w_hh[i, j] = 1.0 if d_prev == source else 0.0      # yesterday was `source`
    readout = torch.tensor([[1.0 if d == dish else 0.0 for d, _ in UNITS] for dish in range(len(DISHES))])
    return {"w_ih": w_ih, "w_hh": w_hh, "b_ih": torch.full((n_units,), -1.0), "b_hh": torch.zeros(n_units),
            "readout": readout}


def rnn_with_weights(w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor, backend: str, device) -> RNN:
    """A one-layer relu fusedseq RNN whose parameters are copied from the given ones."""
    hidden, inputs = w_ih.shape
    rnn = RNN(inputs, hidden, nonlinearity="relu", batch_first=True, backend=backend).to(device)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(w_ih)
        rnn.weight_hh_l0.copy_(w_hh)
        rnn.bias_ih_l0.copy_(b_ih)
        rnn.bias_hh_l0.copy_(b_hh)
    return rnn


def one_hot_weather(weather: list[int], device) -> Tensor:
    """(1, T, 2) float one-hot batch of one sequence."""
    return F.one_hot(torch.tensor(weather, device=device), len(WEATHER)).float().unsqueeze(0)


@torch.no_grad()
def run_hand_set_cooks(weather: list[int], start_dish: int, backend: str, device) -> dict[str, list[int]]:
    """The three cooks as RNNs with hand-set weights, on one weather sequence.

    ``start_dish`` is the dish served the day before ``weather[0]``. Returns
    the menu of each (dish indices, one per day)."""
    x = one_hot_weather(weather, device)                                  # (1, T, 2)
    T = len(weather)

    # (a) input only: W_hh = 0, so h_t = relu(RULE x_t) is the dish's one-hot.
    rule = rnn_with_weights(rule_matrix(), torch.zeros(2, 2), torch.zeros(2), torch.zeros(2), backend, device)
    h_rule, _ = rule(x)                                                   # (1, T, 2)

    # (b) state only: W_ih = 0, h0 = yesterday's dish, h_t = CYCLE h_(t-1).
    cycle = rnn_with_weights(torch.zeros(3, 2), cycle_matrix(), torch.zeros(3), torch.zeros(3), backend, device)
    h0 = F.one_hot(torch.tensor([start_dish], device=device), 3).float().unsqueeze(0)   # (1, 1, 3)
    h_cycle, _ = cycle(torch.zeros(1, T, 2, device=device), h0)           # (1, T, 3)

    # (c) both: the six (dish, weather) units; the day before starts on (start_dish, rainy)
    # (either weather unit of that dish would do: both lead to the same tomorrow).
    weights = real_cook_weights()
    real = rnn_with_weights(weights["w_ih"], weights["w_hh"], weights["b_ih"], weights["b_hh"], backend, device)
    h0 = torch.zeros(1, 1, len(UNITS), device=device)
    h0[0, 0, UNITS.index((start_dish, RAINY))] = 1.0
    h_real, _ = real(x, h0)                                               # (1, T, 6)
    dish_scores = h_real @ weights["readout"].to(device).T               # (1, T, 3)
    return {"rule": h_rule[0].argmax(-1).tolist(), "cycle": h_cycle[0].argmax(-1).tolist(),
            "real": dish_scores[0].argmax(-1).tolist(), "real_states": h_real[0].cpu()}


# ------------------------------------------------------------ learned cook --
class LearnedCook(torch.nn.Module):
    """An RNN that reads the weather and names the dish, learned from a record.

    The day before a sequence is given by its dish: ``start`` maps it to the
    RNN's initial state (a learned vector per dish)."""

    def __init__(self, hidden_size: int, backend: str):
        super().__init__()
        self.start = torch.nn.Embedding(len(DISHES), hidden_size)
        self.rnn = RNN(len(WEATHER), hidden_size, nonlinearity="tanh", batch_first=True, backend=backend)
        self.readout = torch.nn.Linear(hidden_size, len(DISHES))

    def states(self, weather: Tensor, start_dish: Tensor, state_noise: float = 0.0,
               gen: Optional[torch.Generator] = None) -> Tensor:
        """weather: (B, T) indices; start_dish: (B,) -> hidden states (B, T, H).
        ``state_noise``: std of Gaussian noise added to the initial state (training only)."""
        x = F.one_hot(weather, len(WEATHER)).float()                     # (B, T, 2)
        h0 = torch.tanh(self.start(start_dish))                           # (B, H)
        if state_noise > 0:
            h0 = h0 + state_noise * torch.randn(h0.shape, generator=gen).to(h0.device)
        states, _ = self.rnn(x, h0.unsqueeze(0))                          # (B, T, H)
        return states

    def forward(self, weather: Tensor, start_dish: Tensor, state_noise: float = 0.0,
                gen: Optional[torch.Generator] = None) -> Tensor:
        """Dish logits (B, T, 3); arguments as :meth:`states`."""
        return self.readout(self.states(weather, start_dish, state_noise, gen))


def training_windows(weather: Tensor, menu: Tensor, start_dish: int, length: int, batch: int, gen: torch.Generator):
    """A batch of random windows of the record.

    weather, menu: (D,) the record. Returns the windows' weather (B, L), their
    menu (B, L) and the dish served the day before each window (B,)."""
    days = weather.shape[0]
    begin = torch.randint(0, days - length + 1, (batch,), generator=gen)  # (B,)
    idx = begin.unsqueeze(1) + torch.arange(length)                       # (B, L)
    prev = torch.where(begin > 0, menu[(begin - 1).clamp(min=0)], torch.full_like(begin, start_dish))
    return weather[idx], menu[idx], prev


def window_length(step: int, steps: int, longest: int = 32) -> int:
    """Curriculum: windows grow from 2 days to ``longest`` over the first half of training.
    Short windows teach one day's rule; long ones teach the state to hold for weeks."""
    return min(longest, 2 + (longest - 2) * step // max(1, steps // 2))


def train_learned_cook(weather: list[int], menu: list[int], start_dish: int, args, device,
                       steps: int, gen: torch.Generator) -> tuple[LearnedCook, list[float]]:
    """Fits a LearnedCook to the record by cross-entropy on random windows.

    What makes the learned cook hold up for a whole unseen year, not only for
    the windows it was trained on (each measured over many seeds): a long
    record (1000 days, so long runs of sunny days occur), the window
    curriculum, noise on the initial state (the dynamics must pull a
    perturbed state back to the right dish), gradient clipping and a cosine
    learning-rate decay."""
    model = LearnedCook(args.hidden, args.backend).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1.0 + math.cos(math.pi * s / steps)))
    weather_t, menu_t = torch.tensor(weather), torch.tensor(menu)         # (D,), (D,)
    losses = []
    bar = _common.progress(steps, desc="menu: learning the cook")
    for step in bar:
        length = min(window_length(step, steps), len(weather))
        w, m, prev = training_windows(weather_t, menu_t, start_dish, length, 64, gen)
        logits = model(w.to(device), prev.to(device), state_noise=0.3, gen=gen)  # (B, L, 3)
        loss = F.cross_entropy(logits.reshape(-1, len(DISHES)), m.to(device).reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay.step()
        losses.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}", window=length, refresh=False)
    bar.close()
    return model, losses


@torch.no_grad()
def predict(model: LearnedCook, weather: list[int], start_dish: int, device, return_states: bool = False):
    """The learned cook's menu for one whole weather sequence (and, with
    ``return_states``, its hidden states (T, H) on the CPU)."""
    states = model.states(torch.tensor([weather], device=device),
                          torch.tensor([start_dish], device=device))      # (1, T, H)
    menu = model.readout(states)[0].argmax(-1).tolist()
    return (menu, states[0].cpu()) if return_states else menu


def accuracy(pred: list[int], truth: list[int]) -> float:
    return sum(p == t for p, t in zip(pred, truth, strict=True)) / len(truth)


# -------------------------------------------------------------------- plots --
def _heatmap(ax, m: Tensor, title: str, rows=None, cols=None, annotate: bool = True) -> None:
    """``m`` (R, C) (or (R,)) as coloured cells, blue < 0 < red, with labelled rows and columns."""
    m = m.detach().float().cpu()
    if m.dim() == 1:
        m = m.unsqueeze(1)
    lim = max(float(m.abs().max()), 1e-6)
    # A wider colour range than the data keeps the cells light enough to read numbers on.
    image = ax.imshow(m.numpy(), cmap="RdBu_r", vmin=-1.6 * lim, vmax=1.6 * lim)
    ax.set_title(title, fontsize=9)
    for setter, labels, n in ((ax.set_yticks, rows, m.shape[0]), (ax.set_xticks, cols, m.shape[1])):
        if labels is not None:
            setter(range(n), labels, fontsize=7)
        else:
            setter([])
    if cols is not None and max(len(c) for c in cols) > 6:
        ax.tick_params(axis="x", labelrotation=60)
    if annotate:
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                v = float(m[i, j])
                ax.text(j, i, f"{v:g}" if v == round(v) else f"{v:.1f}", ha="center", va="center", fontsize=7)
    else:
        ax.figure.colorbar(image, ax=ax, shrink=0.6)


def plot_matrices(out: str) -> str:
    """The rule, the cycle and the hand-set real-cook RNN as labelled matrices."""
    weights = real_cook_weights()
    fig = _common.new_figure(13, 8.5, layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1, 1.25])
    ax_rule, ax_cycle, ax_text = top.subplots(1, 3, gridspec_kw={"width_ratios": [2, 3, 4]})
    _heatmap(ax_rule, rule_matrix(), "(a) the rule: dish = R · weather\n(an RNN with W_hh = 0)",
             rows=["pie", "hamburger"], cols=list(WEATHER))
    _heatmap(ax_cycle, cycle_matrix(), "(b) the obsessive cook: dish = C · yesterday's dish\n(an RNN with W_ih = 0)",
             rows=list(DISHES), cols=[f"{d} (yesterday)" for d in DISHES])
    ax_text.axis("off")
    ax_text.text(0.0, 0.5, "Weather and dishes are one-hot vectors:\n"
                 "  sunny = [1, 0], rainy = [0, 1]\n  pie = [1, 0, 0], hamburger = [0, 1, 0], soup = [0, 0, 1]\n\n"
                 "(a) input only: today's weather picks the dish\n"
                 "(b) state only: yesterday's dish picks the next one\n"
                 "(c) both: today's dish depends on the weather AND\n"
                 "     yesterday's dish. One unit per dish cannot do it\n"
                 "     (an OR of two ANDs), one unit per (dish, weather) can:\n"
                 "     unit (d, w) = relu([today is w] + [yesterday leads to d] - 1)",
                 va="center", ha="left", fontsize=9, family="monospace")
    top.suptitle("Menu of the day: each cook is h_t = relu(W_ih x_t + W_hh h_(t-1) + b) with weights set by hand",
                 fontsize=11)
    axes = bottom.subplots(1, 4, gridspec_kw={"width_ratios": [2, 6, 1, 6]})
    _heatmap(axes[0], weights["w_ih"], "W_ih\n(today's weather)", rows=UNIT_LABELS, cols=list(WEATHER))
    _heatmap(axes[1], weights["w_hh"], "W_hh (rows: today's unit,\ncolumns: yesterday's unit)",
             rows=UNIT_LABELS, cols=UNIT_LABELS)
    _heatmap(axes[2], weights["b_ih"] + weights["b_hh"], "bias", rows=UNIT_LABELS, cols=["b"])
    _heatmap(axes[3], weights["readout"], "readout: a dish is\nthe sum of its two units", rows=list(DISHES),
             cols=UNIT_LABELS)
    bottom.suptitle("(c) the real cook: one relu unit per (dish, weather); sunny -> yesterday's dish, "
                    "rainy -> the next dish of the cycle", fontsize=10)
    return _common.save_figure(fig, out, "menu_matrices.png")


def plot_learned(model: LearnedCook, losses: list[float], states: Tensor, dishes: list[int], out: str) -> str:
    """The learned RNN's weights, its training loss, and its hidden states on
    unseen days (states (T, H), projected to 2-D by PCA) coloured by the dish."""
    rnn = model.rnn
    fig = _common.new_figure(14, 8.5, layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.15, 1])
    axes = top.subplots(1, 3, gridspec_kw={"width_ratios": [1.3, 5, 5]})
    units = [f"h{i}" for i in range(rnn.hidden_size)]
    _heatmap(axes[0], rnn.weight_ih_l0, "W_ih", rows=units, cols=list(WEATHER_SYMBOL), annotate=False)
    _heatmap(axes[1], rnn.weight_hh_l0, "W_hh", rows=units, cols=units, annotate=False)
    _heatmap(axes[2], model.readout.weight, "readout", rows=list(DISHES), cols=units, annotate=False)
    top.suptitle("The real cook learned by backprop from the record: tanh RNN + linear readout "
                 "(no longer readable weight by weight)", fontsize=11)

    ax_loss, ax_pca = bottom.subplots(1, 2)
    ax_loss.semilogy(losses)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("cross-entropy")
    ax_loss.set_title("training loss (windows grow from 2 to 32 days)", fontsize=9)
    centred = states - states.mean(0)                                     # (T, H)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    xy = (centred @ v[:2].T).numpy()                                      # (T, 2)
    dishes_t = torch.tensor(dishes)
    for d, name in enumerate(DISHES):
        pts = xy[(dishes_t == d).numpy()]
        ax_pca.scatter(pts[:, 0], pts[:, 1], s=12, color=_DISH_COLORS[d], label=name, alpha=0.7)
    ax_pca.set_xlabel("PC 1")
    ax_pca.set_ylabel("PC 2")
    ax_pca.legend(fontsize=8)
    ax_pca.set_title("its hidden state on the unseen days (PCA): tight clusters, each of a single dish", fontsize=9)
    return _common.save_figure(fig, out, "menu_learned.png")


_DISH_COLORS = ("#d9a441", "#a0522d", "#5f9ea0")
_WEATHER_COLORS = ("#ffd54f", "#90a4ae")


def _menu_strip(ax, weather: list[int], rows: list[tuple[str, list[int]]], truth: list[int], title: str) -> None:
    """One column per day: the weather, then each menu row; wrong dishes boxed in red."""
    from matplotlib.patches import Rectangle

    T = len(weather)
    labels = ["weather"] + [name for name, _ in rows]
    for t, w in enumerate(weather):
        ax.add_patch(Rectangle((t, 0), 1, 1, color=_WEATHER_COLORS[w]))
        ax.text(t + 0.5, 0.5, WEATHER_SYMBOL[w], ha="center", va="center", fontsize=8)
    for r, (_, menu) in enumerate(rows, start=1):
        for t, d in enumerate(menu):
            ax.add_patch(Rectangle((t, r), 1, 1, color=_DISH_COLORS[d], ec="white", lw=0.5))
            ax.text(t + 0.5, r + 0.5, DISHES[d][0].upper(), ha="center", va="center", fontsize=7, color="white")
            if d != truth[t]:
                ax.add_patch(Rectangle((t + 0.05, r + 0.05), 0.9, 0.9, fill=False, ec="red", lw=1.5))
    ax.set_xlim(0, T)
    ax.set_ylim(len(labels), 0)
    ax.set_yticks([i + 0.5 for i in range(len(labels))], labels, fontsize=8)
    ax.set_xlabel("day", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_title(title, fontsize=9)


def plot_menu_over_time(record_weather, record_menu, hand_set, learned_record, test_weather, test_menu,
                        learned_test, out: str, days_shown: int = 60) -> str:
    from matplotlib.patches import Patch

    n = min(days_shown, len(record_weather))
    m = min(days_shown, len(test_weather))
    fig = _common.new_figure(max(10, 0.2 * max(n, m) + 2), 5.2, layout="constrained")
    ax1, ax2 = fig.subplots(2, 1)
    _menu_strip(ax1, record_weather[:n], [("recorded", record_menu[:n]), ("hand-set RNN", hand_set[:n]),
                                          ("learned RNN", learned_record[:n])], record_menu[:n],
                f"the record (first {n} of {len(record_weather)} days)")
    _menu_strip(ax2, test_weather[:m], [("true cook", test_menu[:m]), ("learned RNN", learned_test[:m])],
                test_menu[:m], f"days the learned RNN never saw (first {m} of {len(test_weather)})")
    handles = [Patch(color=c, label=f"{name} ({name[0].upper()})") for c, name in zip(_DISH_COLORS, DISHES)]
    handles += [Patch(color=c, label=f"{name} {s}") for c, name, s in zip(_WEATHER_COLORS, WEATHER, WEATHER_SYMBOL)]
    handles.append(Patch(fill=False, ec="red", label="wrong dish"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle("Menu over time: sunny -> yesterday's dish again, rainy -> next dish of pie > hamburger > soup",
                 fontsize=10)
    return _common.save_figure(fig, out, "menu_over_time.png")


# ---------------------------------------------------------------------- run --
def _print_menu(weather, recorded, hand_set, learned, days: int) -> None:
    rows = [(t + 1, f"{WEATHER_SYMBOL[w]} {WEATHER[w]}", DISHES[r], DISHES[h], DISHES[l])
            for t, (w, r, h, l) in enumerate(zip(weather, recorded, hand_set, learned)) if t < days]
    print(_common.table(rows, ["day", "weather", "recorded", "hand-set RNN", "learned RNN"]))


def run(args: argparse.Namespace) -> dict:
    device = _common.resolve_device(args.device)
    days, test_days = args.days, args.test_days
    steps = args.steps or (300 if args.quick else 600)
    gen = torch.Generator().manual_seed(args.seed)

    # The record the cook kept, and a stretch of days kept apart for testing.
    record_rng, test_rng = _common.numpy_rng(args.seed, 0), _common.numpy_rng(args.seed, 1)
    start_dish = int(record_rng.integers(len(DISHES)))
    record_weather = random_weather(record_rng, days)
    record_menu = real_cook(record_weather, start_dish)
    test_start = int(test_rng.integers(len(DISHES)))
    test_weather = random_weather(test_rng, test_days)
    test_menu = real_cook(test_weather, test_start)

    # Hand-set weights: the three cooks, each an RNN.
    hand = run_hand_set_cooks(record_weather, start_dish, args.backend, device)
    rule_acc = accuracy(hand["rule"], rule_cook(record_weather))
    cycle_acc = accuracy(hand["cycle"], obsessive_cook(start_dish, days))
    hand_acc = accuracy(hand["real"], record_menu)
    one_hot = bool(((hand["real_states"] == 0) | (hand["real_states"] == 1)).all()
                   and (hand["real_states"].sum(-1) == 1).all())
    print(f"(a) rule, R·weather, on {days} days: {rule_acc:.0%} as the rule says")
    print(f"(b) obsessive cook, C·yesterday, on {days} days: {cycle_acc:.0%} as the cycle says")
    print(f"(c) real cook, hand-set RNN: {hand_acc:.0%} of the recorded menu "
          f"(hidden state exactly one-hot every day: {one_hot})")

    # Learned from the record by backprop.
    model, losses = train_learned_cook(record_weather, record_menu, start_dish, args, device, steps, gen)
    model.eval()
    learned_record = predict(model, record_weather, start_dish, device)
    learned_test, test_states = predict(model, test_weather, test_start, device, return_states=True)
    train_acc, test_acc = accuracy(learned_record, record_menu), accuracy(learned_test, test_menu)

    print(f"the recorded menu (first 14 of {days} days; the day before day 1: {DISHES[start_dish]}):")
    _print_menu(record_weather, record_menu, hand["real"], learned_record, 14)
    print(f"learned RNN: {train_acc:.1%} of the record, {test_acc:.1%} of {test_days} unseen days")

    pngs = [plot_matrices(args.out), plot_learned(model, losses, test_states, learned_test, args.out),
            plot_menu_over_time(record_weather, record_menu, hand["real"], learned_record, test_weather,
                                test_menu, learned_test, args.out)]
    return {"record_days": days, "test_days": test_days, "rule_accuracy": rule_acc, "cycle_accuracy": cycle_acc,
            "hand_set_accuracy": hand_acc, "hand_set_state_one_hot": one_hot, "steps": steps,
            "final_loss": losses[-1], "learned_train_accuracy": train_acc, "learned_test_accuracy": test_acc,
            "pngs": pngs}
