"""Demo 3, ``embeddings``: word vectors learned by predicting the next word.

``fusedseq.nn.NextWordModel`` (embedding -> fused RNN -> linear) reads the
corpus and predicts each next word. Nothing tells it what a day or a dish
is; but words that are followed by the same words must move the output the
same way, so the network gives them similar hidden states. A word's
embedding is the hidden layer's activation when the model reads that word,
and similar words point in similar directions (cosine similarity).

On the default corpus the grammar knows each word's category (day, weather,
cook, verb, dish), so "similar" can be measured: the share of each word's 5
nearest neighbours that share its category, against what random neighbours
would give. Pictures: a 2-D projection of the embeddings with the words
written in, and the cosine-similarity matrix sorted by category.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from ..data import grammar
from ..nn.embedding import NextWordModel
from . import _common, _text

NAME = "embeddings"
HELP = "learn word embeddings by next-word prediction; nearest neighbours and a 2-D map"

# (full, --quick)
SETTINGS = {"steps": (800, 60), "batch_size": (64, 16), "context": (12, 12), "embed_dim": (32, 16),
            "hidden_size": (64, 32), "lr": (1e-2, 1e-2)}
NEIGHBOURS = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _text.add_corpus_arguments(parser)
    parser.add_argument("--steps", type=_common.positive_int, default=None,
                        help=f"training steps (default {SETTINGS['steps'][0]}, --quick {SETTINGS['steps'][1]})")


def category_agreement(model: NextWordModel, k: int = NEIGHBOURS) -> tuple[float, float, dict]:
    """For every word with a grammar category: the share of its ``k`` nearest
    neighbours in the same category. Returns (mean share, the share random
    neighbours would give, {category: mean share})."""
    words = [w for w in model.vocab if grammar.category_of(w) is not None]
    V = len(model.vocab)
    per_category: dict[str, list[float]] = {}
    chance = []
    for w in words:
        cat = grammar.category_of(w)
        same = sum(grammar.category_of(n) == cat for n, _ in model.most_similar(w, k))
        per_category.setdefault(cat, []).append(same / k)
        peers = sum(grammar.category_of(o) == cat for o in model.vocab) - 1
        chance.append(peers / (V - 1))
    shares = [s for v in per_category.values() for s in v]
    return (sum(shares) / len(shares), sum(chance) / len(chance),
            {c: sum(v) / len(v) for c, v in per_category.items()})


def ordered_words(model: NextWordModel) -> list[str]:
    """The vocabulary grouped by grammar category (words without one last)."""
    order = list(grammar.CATEGORIES)
    return sorted(model.vocab, key=lambda w: (order.index(grammar.category_of(w))
                                              if grammar.category_of(w) in order else len(order), w))


def plot_map(model: NextWordModel, out_dir: str) -> str:
    """The embeddings projected on their two principal directions, labelled."""
    emb = model.embeddings().double().cpu()                           # (V, hidden)
    unit = F.normalize(emb, dim=-1)                                   # compare directions, as cosine does
    centred = unit - unit.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    xy = (centred @ v[:2].T).numpy()                                  # (V, 2)
    fig = _common.new_figure(7.5, 6.0)
    ax = fig.add_subplot(1, 1, 1)
    categories = [grammar.category_of(w) or "other" for w in model.vocab]
    labels = []
    for n, cat in enumerate(dict.fromkeys(categories)):
        rows = [i for i, c in enumerate(categories) if c == cat]
        ax.scatter(xy[rows, 0], xy[rows, 1], color=f"C{n}", s=18, label=cat)
        labels += [ax.annotate(model.vocab[i], xy[i], fontsize=8, color=f"C{n}", xytext=(3, 2),
                               textcoords="offset points") for i in rows]
    ax.legend(frameon=False, fontsize=8, loc="best")
    ax.set_xticks([]), ax.set_yticks([])
    shown = _common.declutter_labels(fig, labels)  # a word whose label would overlap another's stays a dot
    ax.set_title("word embeddings (hidden state after each word), first two principal directions"
                 + (f"\n{shown} of {len(labels)} words labelled (the rest would overlap)" if shown < len(labels) else ""))
    return _common.save_figure(fig, out_dir, "embeddings_map.png")


def plot_similarity(model: NextWordModel, out_dir: str) -> str:
    """Cosine similarity of every pair of words, grouped by category."""
    words = ordered_words(model)
    index = torch.tensor([model.vocab.index(w) for w in words])
    unit = F.normalize(model.embeddings().double().cpu()[index], dim=-1)
    cos = (unit @ unit.T).numpy()
    fig = _common.new_figure(8.0, 7.0)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(cos, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(len(words)), words, rotation=90, fontsize=7)
    ax.set_yticks(range(len(words)), words, fontsize=7)
    fig.colorbar(im, ax=ax, shrink=0.8, label="cosine similarity")
    ax.set_title("cosine similarity of the embeddings (sorted by grammar category)")
    return _common.save_figure(fig, out_dir, "embeddings_similarity.png")


def run(args: argparse.Namespace) -> dict:
    device = _common.resolve_device(args.device)
    pick = 1 if args.quick else 0
    data = _text.load_text(args.corpus, args.quick)
    vocab = data.tokenizer.itos
    model = NextWordModel(vocab, embed_dim=SETTINGS["embed_dim"][pick], hidden_size=SETTINGS["hidden_size"][pick],
                          backend=args.backend).to(device)
    context = SETTINGS["context"][pick]
    result, report = _text.train_and_score(model, data, context, args, SETTINGS, desc="embeddings")

    if data.from_grammar:
        probes = [words[0] for words in grammar.CATEGORIES.values() if words[0] in model.vocab]
    else:
        probes = vocab[:5]
    print("nearest words (cosine similarity):")
    for w in probes:
        near = ", ".join(f"{n} {c:.2f}" for n, c in model.most_similar(w, NEIGHBOURS))
        print(f"  {w:>10}: {near}")
    metrics = {"steps": result.steps, "final_train_loss": result.final_loss, "train_tokens_per_s": result.tokens_per_s,
               **report}
    if data.from_grammar:
        share, chance, per_cat = category_agreement(model)
        metrics["top5_same_category"] = share
        metrics["top5_same_category_chance"] = chance
        metrics.update({f"top5_same_category[{c}]": v for c, v in per_cat.items()})
    metrics["pngs"] = [plot_map(model, args.out), plot_similarity(model, args.out)]
    return metrics
