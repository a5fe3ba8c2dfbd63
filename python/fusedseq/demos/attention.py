"""Demo 4, ``attention``: attention as key and lock.

Every word makes a *query* (what it looks for) and a *key* (what it offers).
A query fits every key, some better than others: the fit is the dot product
``q · k``, and the softmax of a query's fits over all earlier words says how
much of each word's *value* it takes. Nobody tells the model which key fits
which query; training on next-word prediction shapes the locks and keys.

Here a small transformer learns the corpus, and we look at what it attends
to in one sentence. In the default corpus the dish a cook makes depends on
the weather said several words earlier ("on monday it is rainy and the chef
cooks ..."): to predict the dish, the verb's query must find the weather
word's key. The demo measures exactly that: the most attention any head puts
from the verb onto the weather word, against a uniform spread.

Pictures: every head's attention map on the sentence (query words down,
key words across), and the verb's row of the head that looks hardest at the
weather: the fit ``q · k / sqrt(d)`` of each key and the softmax made of it.
"""
from __future__ import annotations

import argparse
from typing import Optional

import torch

from ..data import grammar, tokenize
from . import _common, _text
from .lm import build_model

NAME = "attention"
HELP = "train a small transformer and plot its attention maps (query words against key words)"

# (full, --quick)
SETTINGS = {"steps": (900, 60), "batch_size": (32, 16), "lr": (3e-3, 3e-3)}
DEFAULT_SENTENCE = "on monday it is rainy and the chef cooks soup ."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _text.add_corpus_arguments(parser)
    parser.add_argument("--steps", type=_common.positive_int, default=None,
                        help=f"training steps (default {SETTINGS['steps'][0]}, --quick {SETTINGS['steps'][1]})")
    parser.add_argument("--sentence", default=None,
                        help=f"the sentence to look at (default: {DEFAULT_SENTENCE!r}; with --corpus, "
                             "the first held-out sentence)")


def verb_and_weather(words: list[str]) -> Optional[tuple[int, int]]:
    """Positions of the verb (whose next word is the dish) and of the weather
    word, when the sentence has both."""
    cats = [grammar.category_of(w) for w in words]
    if "verb" in cats and "weather" in cats:
        return cats.index("verb"), cats.index("weather")
    return None


def attention_on(model, tokenizer, words: list[str], device) -> tuple[list[str], torch.Tensor, list[torch.Tensor]]:
    """The input tokens ("." + the sentence: the "." stands for the end of the
    sentence before, as in training text), their ids (1, T), and each layer's
    (n_heads, T, T) attention on them."""
    tokens = ["."] + words[:-1]                     # the inputs; each predicts the next word
    idx = torch.tensor([tokenizer.encode(tokens)], device=device)
    return tokens, idx, [m[0].cpu() for m in model.attention_maps(idx)]


def plot_maps(tokens: list[str], maps: list[torch.Tensor], out_dir: str) -> str:
    layers, heads = len(maps), maps[0].shape[0]
    fig = _common.new_figure(3.1 * heads + 0.8, 3.1 * layers + 0.4)
    axes = []
    for l, layer in enumerate(maps):
        for h in range(heads):
            ax = fig.add_subplot(layers, heads, l * heads + h + 1)
            axes.append(ax)
            image = ax.imshow(layer[h].numpy(), cmap="viridis", vmin=0, vmax=1)
            ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=7)
            ax.set_yticks(range(len(tokens)), tokens, fontsize=7)
            ax.set_title(f"layer {l}, head {h}", fontsize=9)
            if h == 0:
                ax.set_ylabel("query (word looking)")
            if l == layers - 1:
                ax.set_xlabel("key (word looked at)")
    fig.colorbar(image, ax=axes, shrink=0.8, label="attention weight (each row sums to 1)")
    fig.suptitle("attention maps: each row is a query's softmax over the keys", y=1.0)
    return _common.save_figure(fig, out_dir, "attention_maps.png")


def plot_key_and_lock(model, tokens: list[str], idx: torch.Tensor, maps, query: int, layer: int, head: int,
                      out_dir: str) -> str:
    """One query's fits ``q·k/sqrt(d)`` with every visible key, and their softmax."""
    with torch.no_grad():
        x = model.token_embedding(idx) + model.position_embedding(torch.arange(idx.shape[1], device=idx.device))
        for block in model.blocks[:layer]:
            x = block(x)
        attn = model.blocks[layer].attn
        q, k, _ = attn.project(model.blocks[layer].ln1(x))         # (1, H, T, D), (1, Hkv, T, D)
        group = attn.n_heads // attn.n_kv_heads
        fits = (q[0, head, query] @ k[0, head // group, :query + 1].T) / attn.head_dim ** 0.5   # (query+1,)
    fits = fits.cpu()
    keys = tokens[:query + 1]
    fig = _common.new_figure(9.0, 3.4)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ax1.bar(range(len(keys)), fits.numpy(), color="#4477aa")
    ax1.set_title(f"how well query {tokens[query]!r} fits each key (q·k/√d)", fontsize=9)
    ax2.bar(range(len(keys)), maps[layer][head, query, :query + 1].numpy(), color="#cc6677")
    ax2.set_title("softmax of the fits: the weights of the values", fontsize=9)
    for ax in (ax1, ax2):
        ax.set_xticks(range(len(keys)), keys, rotation=60, fontsize=8)
    fig.suptitle(f"key and lock: layer {layer}, head {head}", fontsize=10)
    return _common.save_figure(fig, out_dir, "attention_key_and_lock.png")


def run(args: argparse.Namespace) -> dict:
    device = _common.resolve_device(args.device)
    data = _text.load_text(args.corpus, args.quick)
    model = build_model(len(data.tokenizer), args.quick, args.backend).to(device)
    context = model.config.context_length
    result, report = _text.train_and_score(model, data, context, args, SETTINGS, desc="attention")

    sentence = args.sentence or (DEFAULT_SENTENCE if data.from_grammar else " ".join(data.test_sentences[0]))
    words = tokenize(sentence)
    data.tokenizer.encode(words)                    # unknown words: a clear error before any plotting
    if len(words) > context:
        raise _common.DemoArgumentError(f"--sentence has {len(words)} words; the model's context is {context}")
    tokens, idx, maps = attention_on(model, data.tokenizer, words, device)
    metrics = {"steps": result.steps, "final_train_loss": result.final_loss, **report, "sentence": " ".join(words)}
    pngs = [plot_maps(tokens, maps, args.out)]

    positions = verb_and_weather(words)
    if positions is not None:
        verb, weather = positions
        query, key = verb + 1, weather + 1          # token positions ("." comes first)
        stacked = torch.stack([m[:, query, key] for m in maps])     # (layers, heads)
        layer, head = divmod(int(stacked.argmax()), stacked.shape[1])
        metrics.update({
            "verb_to_weather_attention": float(stacked.max()),
            "uniform_attention": 1.0 / (query + 1),
            "verb_to_weather_head": f"layer {layer}, head {head}",
        })
        print(f"the query of {words[verb]!r} puts {float(stacked.max()):.2f} of its attention on the key of "
              f"{words[weather]!r} (layer {layer}, head {head}); a uniform spread would give {1 / (query + 1):.2f}")
        pngs.append(plot_key_and_lock(model, tokens, idx, maps, query, layer, head, args.out))
    metrics["pngs"] = pngs
    return metrics
