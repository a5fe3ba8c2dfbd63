"""Dynamics: recurrent networks trained to forecast a chaotic signal recreate its attractor.

The Lorenz system (sigma = 10, rho = 28, beta = 8/3),

    dx/dt = sigma (y - x),   dy/dt = x (rho - z) - y,   dz/dt = x y - beta z,

is integrated with fourth-order Runge-Kutta in float64; after a transient is
thrown away, only the x coordinate is kept (~40,000 samples, normalised).
Windows of 40 past values (1 feature each) predict the next value; the first
80% of the time series trains, the last 20% tests.

Forecasters of the next value:
  * persistence: the next value is the last one;
  * linear autoregression (AR): least squares on the 40 lags;
  * three recurrent networks side by side, each reading the window with a
    linear head on its last hidden state: the Elman RNN (fusedseq RNN, tanh),
    an LSTM and a GRU. They have about the same number of weights (the RNN's
    width is --hidden; the LSTM's and GRU's are chosen to match its weight
    count, since a gated unit carries 4 or 3 times an Elman unit's weights),
    so what differs is how the state is updated, not how much of it there is.
    Each predicts the change from the last value (the persistence baseline is
    built in; the network learns what it misses).

A network only ever sees x, yet to predict x well it must know where on the
attractor the system is -- which needs y and z. Its hidden state after a
window, projected to 3-D by PCA, traces a shape with the attractor's two
lobes. An autoencoder (40 -> 64 -> 3 -> 64 -> 40 MLP) compressing the same
windows to 3 numbers is drawn beside them. How faithful each picture is gets
a number: the "neighbour R^2" of (x, y, z) guessed from the nearest points of
the picture (see ``neighbour_r2``): near 1 when the picture is the attractor,
bent but not torn.

Plots: dynamics_forecast.png (one-step errors, a 300-step rollout in which
each network and AR are fed their own predictions) and dynamics_attractor.png
(the true attractor, each network's hidden states, the autoencoder's latent
trajectory).
"""
from __future__ import annotations

import argparse
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..nn import GRU, LSTM, RNN
from . import _common

NAME = "dynamics"
HELP = "Lorenz system: RNN, LSTM and GRU forecasters vs baselines; their hidden states recreate the attractor"

SIGMA, RHO, BETA = 10.0, 28.0, 8.0 / 3.0
DT = 0.01            # RK4 step (time units)
STRIDE = 5           # keep every STRIDE-th step: one sample every 0.05 time units, so a
                     # window spans 2 time units (two or three turns around a lobe)
TRANSIENT = 2000     # RK4 steps discarded while the trajectory falls onto the attractor
WINDOW = 40          # past values per window
INPUT_NOISE = 0.03   # std of the noise added to the RNN's training windows (see Forecaster)
ROLLOUTS = 10        # rollouts, from starts spread over the test stretch, for the horizon metric
TRAIN_FRACTION = 0.8
# The recurrent networks, in the order they are shown: name -> (module, gate blocks per unit).
NETWORKS = {"rnn": (RNN, 1), "lstm": (LSTM, 4), "gru": (GRU, 3)}
LABELS = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
COLORS = {"rnn": "tab:blue", "lstm": "tab:green", "gru": "tab:red"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--samples", type=_common.positive_int, default=None,
                        help="length of the x series (default 40000; 8000 with --quick)")
    parser.add_argument("--epochs", type=_common.positive_int, default=None,
                        help="passes over the training windows by each network; the autoencoder makes "
                             "twice as many (default 10; 8 with --quick, on fewer samples)")
    parser.add_argument("--hidden", type=_common.positive_int, default=64,
                        help="hidden units of the RNN; the LSTM and GRU get the width that gives them "
                             "about as many weights (default: %(default)s, i.e. LSTM 31, GRU 36)")
    parser.add_argument("--batch", type=_common.positive_int, default=128,
                        help="windows per training step (default: %(default)s)")
    parser.add_argument("--lr", type=_common.positive_float, default=3e-3,
                        help="Adam learning rate, decayed to 0 by a cosine (default: %(default)s)")
    parser.add_argument("--rollout", type=_common.positive_int, default=300,
                        help="steps of the multi-step rollout plot (default: %(default)s)")


# --------------------------------------------------------------- the system --
def lorenz_derivative(x: float, y: float, z: float) -> tuple[float, float, float]:
    """d(x, y, z)/dt."""
    return SIGMA * (y - x), x * (RHO - z) - y, x * y - BETA * z


def integrate_lorenz(steps: int, dt: float = DT, start=(1.0, 1.0, 1.0)) -> np.ndarray:
    """``steps`` classical RK4 steps from ``start``; returns the states (steps, 3), float64.
    (Plain Python floats: for a 3-vector they are faster than numpy arrays.)"""
    out = np.empty((steps, 3))
    x, y, z = (float(v) for v in start)
    h = 0.5 * dt
    for i in range(steps):
        a1, b1, c1 = lorenz_derivative(x, y, z)
        a2, b2, c2 = lorenz_derivative(x + h * a1, y + h * b1, z + h * c1)
        a3, b3, c3 = lorenz_derivative(x + h * a2, y + h * b2, z + h * c2)
        a4, b4, c4 = lorenz_derivative(x + dt * a3, y + dt * b3, z + dt * c3)
        x += dt / 6.0 * (a1 + 2.0 * a2 + 2.0 * a3 + a4)
        y += dt / 6.0 * (b1 + 2.0 * b2 + 2.0 * b3 + b4)
        z += dt / 6.0 * (c1 + 2.0 * c2 + 2.0 * c3 + c4)
        out[i] = (x, y, z)
    return out


def lorenz_series(samples: int, rng: np.random.Generator) -> np.ndarray:
    """(samples, 3) states on the attractor, one every STRIDE * DT time units,
    from a random start (a seed picks the trajectory)."""
    start = rng.normal(0.0, 1.0, size=3) + np.array([1.0, 1.0, 20.0])
    states = integrate_lorenz(TRANSIENT + samples * STRIDE, start=start)
    return states[TRANSIENT::STRIDE][:samples]


def make_windows(series: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """series: (N,) -> windows (N - W, W) of W past values and their next values (N - W,)."""
    n = series.shape[0] - WINDOW
    idx = np.arange(n)[:, None] + np.arange(WINDOW)[None, :]              # (n, W)
    return series[idx], series[WINDOW:]


# ---------------------------------------------------------------- baselines --
def fit_autoregression(windows: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Least squares next = [window, 1] @ coef; windows (N, W), targets (N,) -> coef (W + 1,)."""
    design = np.hstack([windows, np.ones((windows.shape[0], 1))])
    coef, *_ = np.linalg.lstsq(design, targets, rcond=None)
    return coef


def predict_autoregression(coef: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """windows (N, W) -> next values (N,)."""
    return windows @ coef[:-1] + coef[-1]


# ---------------------------------------------------------------- the models --
def matched_hidden(kind: str, rnn_hidden: int) -> int:
    """The width at which network ``kind`` has about the weights of an RNN of
    width ``rnn_hidden`` (one input feature): G (H^2 + 3H) weights for G gate
    blocks (W_ih, W_hh, b_ih, b_hh), solved for H."""
    gates = NETWORKS[kind][1]
    target = (rnn_hidden ** 2 + 3 * rnn_hidden) / gates
    return max(1, round((-3 + math.sqrt(9 + 4 * target)) / 2))


class Forecaster(torch.nn.Module):
    """A fusedseq recurrent network (``kind``: rnn, lstm or gru) over the
    window and a linear head on its last hidden state, predicting the change
    from the window's last value.

    It is trained on windows with a little noise added (INPUT_NOISE, in units
    of the signal's std): fed its own slightly wrong predictions, a network
    trained on clean windows only drifts off the attractor and blows up
    within a few dozen steps; one that has learned to correct small errors
    keeps tracing the attractor. One-step accuracy on clean windows barely
    suffers."""

    def __init__(self, kind: str, hidden_size: int, backend: str):
        super().__init__()
        self.kind = kind
        self.rnn = NETWORKS[kind][0](1, hidden_size, batch_first=True, backend=backend)
        self.head = torch.nn.Linear(hidden_size, 1)

    def last_state(self, windows: Tensor) -> Tensor:
        """windows: (B, W) -> the hidden state h after the last value, (B, H)."""
        _, h_n = self.rnn(windows.unsqueeze(-1))                          # h_n: (1, B, H), or (h_n, c_n)
        return (h_n[0] if isinstance(h_n, tuple) else h_n)[0]

    def forward(self, windows: Tensor) -> Tensor:
        """windows: (B, W) -> predicted next values (B,)."""
        return windows[:, -1] + self.head(self.last_state(windows)).squeeze(-1)


class Autoencoder(torch.nn.Module):
    """MLP 40 -> 64 -> 3 -> 64 -> 40: a window squeezed through three numbers."""

    def __init__(self, window: int = WINDOW, width: int = 64, latent: int = 3):
        super().__init__()
        self.encoder = torch.nn.Sequential(torch.nn.Linear(window, width), torch.nn.Tanh(),
                                           torch.nn.Linear(width, latent))
        self.decoder = torch.nn.Sequential(torch.nn.Linear(latent, width), torch.nn.Tanh(),
                                           torch.nn.Linear(width, window))

    def forward(self, windows: Tensor) -> tuple[Tensor, Tensor]:
        """windows: (B, W) -> (reconstruction (B, W), latent (B, 3))."""
        z = self.encoder(windows)
        return self.decoder(z), z


def train(model: torch.nn.Module, loss_fn, data: Tensor, epochs: int, batch: int, lr: float,
          gen: torch.Generator, desc: str) -> list[float]:
    """Adam with a cosine decay over ``epochs`` shuffled passes over ``data``
    (N, ...); ``loss_fn(model, rows)`` -> scalar loss. Returns the step losses."""
    steps_per_epoch = max(1, data.shape[0] // batch)
    steps = epochs * steps_per_epoch
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1.0 + math.cos(math.pi * s / steps)))
    losses = []
    bar = _common.progress(steps, desc=desc)
    order = None
    for step in bar:
        if step % steps_per_epoch == 0:
            order = torch.randperm(data.shape[0], generator=gen).to(data.device)
        rows = data[order[(step % steps_per_epoch) * batch:(step % steps_per_epoch + 1) * batch]]
        loss = loss_fn(model, rows)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay.step()
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3g}", refresh=False)
    bar.close()
    return losses


@torch.no_grad()
def in_batches(fn, data: Tensor, batch: int = 4096) -> Tensor:
    """fn applied to ``data`` in chunks of rows, concatenated."""
    return torch.cat([fn(data[i:i + batch]) for i in range(0, data.shape[0], batch)])


# ----------------------------------------------------------------- analysis --
def rollout(predict_next, windows: np.ndarray, steps: int) -> np.ndarray:
    """Feeds a forecaster its own predictions: ``predict_next`` maps windows
    (B, W) to next values (B,); windows (B, W) -> the next ``steps`` values (B, steps)."""
    seq = np.array(windows, dtype=np.float64)                             # (B, W + t)
    for _ in range(steps):
        nxt = np.asarray(predict_next(seq[:, -WINDOW:]), dtype=np.float64)   # (B,)
        seq = np.concatenate([seq, nxt[:, None]], axis=1)
    return seq[:, WINDOW:]


def pca(points: np.ndarray, k: int = 3) -> tuple[np.ndarray, float]:
    """points (N, D) -> their projection on the top ``k`` principal axes (N, k)
    and the share of variance those axes hold."""
    centred = points - points.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:k].T, float((s[:k] ** 2).sum() / (s ** 2).sum())


def neighbour_r2(points: np.ndarray, states: np.ndarray, k: int = 5) -> np.ndarray:
    """How faithfully ``points`` (N, P) -- a picture of the trajectory -- place
    the true ``states`` (N, 3): each point of the second half is given the mean
    state of its ``k`` nearest points in the first half, and the R^2 of that
    guess is returned per coordinate, (3,). Near 1: points close in the
    picture are close on the attractor (the shape is the attractor's, however
    bent); near 0: the picture mixes distant states."""
    n = points.shape[0] // 2
    reference, query = points[:n], points[n:]
    dist = ((query[:, None, :] - reference[None, :, :]) ** 2).sum(-1)    # (N - n, n)
    nearest = np.argpartition(dist, k, axis=1)[:, :k]                    # (N - n, k)
    guess = states[:n][nearest].mean(1)                                  # (N - n, 3)
    truth = states[n:]
    return 1.0 - ((truth - guess) ** 2).sum(0) / ((truth - truth.mean(0)) ** 2).sum(0)


def horizon(pred: np.ndarray, truth: np.ndarray, tolerance: float = 0.5) -> np.ndarray:
    """pred, truth: (B, S) -> per row, the steps before the absolute error first
    exceeds ``tolerance`` (S if never), (B,)."""
    bad = np.abs(pred - truth) > tolerance                                # (B, S)
    return np.where(bad.any(1), bad.argmax(1), pred.shape[1])


# -------------------------------------------------------------------- plots --
def plot_forecast(test_truth: np.ndarray, one_step: dict, mses: dict, roll_truth: np.ndarray, rolls: dict,
                  horizons: dict, start: int, out: str) -> str:
    """One-step forecasts of every forecaster and their MSE; one rollout (from
    test sample ``start``) of AR and each network. one_step, mses: label ->
    (N,) predictions, MSE; rolls, horizons: key ("ar" or a network) -> (S,)
    rollout, steps within tolerance."""
    fig = _common.new_figure(13, 8, layout="constrained")
    grid = fig.add_gridspec(2, 3)
    styles = {"persistence": dict(color="tab:gray", lw=1, ls=":"), "linear AR": dict(color="tab:orange", lw=1),
              **{LABELS[k]: dict(color=COLORS[k], lw=1, ls="--") for k in NETWORKS}}
    ax = fig.add_subplot(grid[0, :2])
    n = min(400, test_truth.shape[0])
    t = np.arange(n)
    ax.plot(t, test_truth[:n], color="black", lw=2, label="truth")
    for label, pred in one_step.items():
        ax.plot(t, pred[:n], label=label, **styles[label])
    ax.set_title("one-step forecasts on the test stretch (each from the true last 40 values)", fontsize=10)
    ax.set_xlabel(f"sample (dt = {STRIDE * DT:g})")
    ax.set_ylabel("x (normalised)")
    ax.legend(fontsize=8, loc="upper right", ncol=2)

    ax = fig.add_subplot(grid[0, 2])
    names = list(mses)
    ax.bar(names, [mses[k] for k in names], color=[styles[k]["color"] for k in names])
    ax.set_yscale("log")
    ax.set_title("one-step test MSE (log scale)", fontsize=10)
    ax.tick_params(axis="x", labelsize=8)
    for i, k in enumerate(names):
        ax.text(i, mses[k], f"{mses[k]:.2g}", ha="center", va="bottom", fontsize=8)

    ax = fig.add_subplot(grid[1, :])
    t = np.arange(roll_truth.shape[0])
    ax.plot(t, roll_truth, color="black", lw=2, label="truth")
    keys = ["ar", *NETWORKS]
    for key in keys:
        label = "linear AR" if key == "ar" else LABELS[key]
        ax.plot(t, rolls[key], color=styles[label]["color"], lw=1.1, ls="-" if key == "ar" else "--",
                label=f"{label} (within 0.5 for {horizons[key]} steps)")
        if horizons[key] < roll_truth.shape[0]:
            ax.axvline(horizons[key], color=styles[label]["color"], lw=0.8, ls=":")
    ax.set_title(f"{roll_truth.shape[0]}-step rollout from test sample {start} (the RNN's median of {ROLLOUTS}): "
                 "each model fed its own predictions; chaos makes any error grow", fontsize=10)
    ax.set_xlabel("steps ahead")
    ax.set_ylabel("x (normalised)")
    lim = 1.5 * float(np.abs(roll_truth).max())
    ax.set_ylim(-lim, lim)
    ax.legend(fontsize=8, loc="upper right", ncol=2)
    fig.suptitle("Forecasting the Lorenz x coordinate from its last 40 values: Elman RNN, LSTM and GRU "
                 "with about the same number of weights", fontsize=12)
    return _common.save_figure(fig, out, "dynamics_forecast.png")


def plot_attractor(true_xyz: np.ndarray, pictures: dict, out: str) -> str:
    """3-D trajectories over the same test stretch, coloured by the true x
    (which lobe the system is on), so corresponding parts share a colour:
    the true attractor, the autoencoder's latent, and each network's hidden
    state (pictures: title -> (points (N, 3), neighbour R^2 (3,))), plus the
    neighbour R^2 of every picture side by side."""
    fig = _common.new_figure(15, 10, layout="constrained")
    colour = true_xyz[:, 0]

    def panel(position, pts, title, labels):
        ax = fig.add_subplot(2, 3, position, projection="3d")
        ax.plot(pts[:, 0], pts[:, 1], pts[:, 2], color="0.75", lw=0.4)
        ax.scatter(pts[:, 0], pts[:, 1], pts[:, 2], c=colour, cmap="coolwarm", s=2, depthshade=False)
        ax.set_title(title, fontsize=10)
        for setter, label in zip((ax.set_xlabel, ax.set_ylabel, ax.set_zlabel), labels):
            setter(label, fontsize=8)
        ax.tick_params(labelsize=6)

    def r2_text(r2):
        return f"neighbour R^2: x {r2[0]:.3f}, y {r2[1]:.3f}, z {r2[2]:.3f}"

    panel(1, true_xyz, "the true attractor (x, y, z)", ("x", "y", "z"))
    names = list(pictures)
    for i, name in enumerate(names):
        pts, r2 = pictures[name]
        axes = ("z 1", "z 2", "z 3") if name.startswith("autoencoder") else ("PC 1", "PC 2", "PC 3")
        panel(2 if name.startswith("autoencoder") else 4 + i, pts, f"{name}\n{r2_text(r2)}", axes)

    ax = fig.add_subplot(2, 3, 3)
    width = 0.8 / 3
    for c, coord in enumerate("xyz"):
        ax.bar(np.arange(len(names)) + (c - 1) * width, [pictures[n][1][c] for n in names], width,
               label=coord, color=("0.3", "0.55", "0.8")[c])
    ax.set_xticks(np.arange(len(names)), [n.split()[0] for n in names], fontsize=8)
    ax.set_ylim(min(0.5, min(float(pictures[n][1].min()) for n in names) - 0.05), 1.01)
    ax.set_title("how faithful each picture is: neighbour R^2 of (x, y, z)", fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    fig.suptitle("Trained only to predict x, each network's hidden state traces the attractor's two lobes "
                 "(colour: the true x, i.e. which lobe)", fontsize=12)
    return _common.save_figure(fig, out, "dynamics_attractor.png")


# ---------------------------------------------------------------------- run --
def run(args: argparse.Namespace) -> dict:
    device = _common.resolve_device(args.device)
    samples = args.samples or (8000 if args.quick else 40000)
    epochs = args.epochs or (8 if args.quick else 10)
    if samples < 10 * WINDOW:
        raise _common.DemoArgumentError(f"--samples must be at least {10 * WINDOW}, got {samples}")
    gen = torch.Generator().manual_seed(args.seed)

    # The signal: x of the Lorenz system, normalised by the training part's statistics.
    states = lorenz_series(samples, _common.numpy_rng(args.seed))         # (N, 3)
    split = int(samples * TRAIN_FRACTION)
    mean, std = states[:split].mean(0), states[:split].std(0)
    states = (states - mean) / std
    x = states[:, 0]
    train_w, train_y = make_windows(x[:split])                             # (Ntr, W), (Ntr,)
    test_w, test_y = make_windows(x[split:])                               # (Nte, W), (Nte,)
    test_xyz = states[split + WINDOW:]                                     # (Nte, 3) the state at each target

    # Baselines.
    persist = test_w[:, -1]
    coef = fit_autoregression(train_w, train_y)
    ar = predict_autoregression(coef, test_w)

    # The three recurrent forecasters and the autoencoder, in float32 on the chosen device.
    to_t = lambda a: torch.as_tensor(a, dtype=torch.float32, device=device)  # noqa: E731
    train_rows = torch.cat([to_t(train_w), to_t(train_y).unsqueeze(1)], dim=1)  # (Ntr, W + 1)

    def forecast_loss(m: Forecaster, rows: Tensor) -> Tensor:
        noise = INPUT_NOISE * torch.randn(rows[:, :-1].shape, generator=gen).to(device)   # (B, W)
        return F.mse_loss(m(rows[:, :-1] + noise), rows[:, -1])

    models, losses = {}, {}
    for kind in NETWORKS:
        width = args.hidden if kind == "rnn" else matched_hidden(kind, args.hidden)
        models[kind] = Forecaster(kind, width, args.backend).to(device)
        losses[kind] = train(models[kind], forecast_loss, train_rows, epochs, args.batch, args.lr, gen,
                             desc=f"dynamics: {LABELS[kind]} forecaster (H={width})")
        models[kind].eval()
    ae = Autoencoder().to(device)
    ae_losses = train(ae, lambda m, rows: F.mse_loss(m(rows[:, :-1])[0], rows[:, :-1]), train_rows,
                      2 * epochs, args.batch, args.lr, gen, desc="dynamics: autoencoder")
    ae.eval()
    one_step = {"persistence": persist, "linear AR": ar,
                **{LABELS[k]: in_batches(m, to_t(test_w)).cpu().double().numpy() for k, m in models.items()}}
    mses = {label: float(np.mean((pred - test_y) ** 2)) for label, pred in one_step.items()}
    ae_mse = float(in_batches(lambda w: ((ae(w)[0] - w) ** 2).mean(1), to_t(test_w)).mean())

    # Multi-step rollouts from starts spread over the test stretch (one is plotted).
    steps = min(args.rollout, test_y.shape[0] - 1)
    starts = np.linspace(0, test_y.shape[0] - steps, ROLLOUTS).astype(int)  # (R,)
    roll_truth = np.stack([test_y[s:s + steps] for s in starts])           # (R, S)
    rolls = {"ar": rollout(lambda w: predict_autoregression(coef, w), test_w[starts], steps)}  # (R, S) each
    with torch.no_grad():
        for kind, m in models.items():
            rolls[kind] = rollout(lambda w, m=m: m(to_t(w)).cpu().numpy(), test_w[starts], steps)
    horizons = {k: horizon(r, roll_truth) for k, r in rolls.items()}       # (R,) each

    # Hidden states and latents over a stretch of consecutive test windows.
    stretch = slice(0, min(3000, test_w.shape[0]))
    xyz = test_xyz[stretch]
    pictures, variances = {}, {}
    for kind, m in models.items():
        hidden = in_batches(m.last_state, to_t(test_w[stretch])).cpu().double().numpy()  # (S, H)
        points, variances[kind] = pca(hidden)
        pictures[f"{LABELS[kind]} hidden state (H={m.rnn.hidden_size}), PCA to 3-D"] = (points,
                                                                                     neighbour_r2(points, xyz))
    latent = in_batches(lambda w: ae(w)[1], to_t(test_w[stretch])).cpu().double().numpy()  # (S, 3)
    pictures["autoencoder latent (3 numbers)"] = (latent, neighbour_r2(latent, xyz))
    r2 = {kind: pictures[name][1] for kind, name in zip((*NETWORKS, "ae"), pictures)}

    shown = int(np.argsort(horizons["rnn"], kind="stable")[ROLLOUTS // 2])   # the RNN's median rollout
    pngs = [plot_forecast(test_y, one_step, mses, roll_truth[shown], {k: r[shown] for k, r in rolls.items()},
                          {k: int(v[shown]) for k, v in horizons.items()}, int(starts[shown]), args.out),
            plot_attractor(xyz, pictures, args.out)]
    metrics = {"samples": samples, "train_windows": int(train_w.shape[0]), "test_windows": int(test_w.shape[0]),
               "epochs": epochs, "mse_persistence": mses["persistence"], "mse_ar": mses["linear AR"]}
    for kind, m in models.items():
        mse = mses[LABELS[kind]]
        metrics.update({
            f"{kind}_hidden_size": m.rnn.hidden_size,
            f"{kind}_weights": sum(p.numel() for p in m.rnn.parameters()),
            f"mse_{kind}": mse, f"{kind}_over_persistence": mse / mses["persistence"],
            f"{kind}_over_ar": mse / mses["linear AR"], f"{kind}_final_train_loss": losses[kind][-1],
            f"rollout_horizon_{kind}_median": float(np.median(horizons[kind])),
            f"rollout_max_abs_{kind}": float(np.abs(rolls[kind]).max()),
            f"{kind}_pca3_variance": variances[kind],
            **{f"{kind}_pca3_neighbour_r2_{c}": float(v) for c, v in zip("xyz", r2[kind])},
        })
    metrics.update({
        "rollout_steps": steps, "rollout_horizon_ar_median": float(np.median(horizons["ar"])),
        "ae_final_train_loss": ae_losses[-1], "ae_test_mse": ae_mse,
        **{f"ae_latent_neighbour_r2_{c}": float(v) for c, v in zip("xyz", r2["ae"])},
        "pngs": pngs,
    })
    return metrics
