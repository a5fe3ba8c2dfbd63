"""Demo 5, ``lm``: a decoder-only transformer learns the corpus word by word,
then writes new sentences.

The model (``fusedseq.nn.TransformerLM``) sees windows of the corpus and
learns, at every position, the distribution of the next word. On the default
corpus the grammar that wrote it knows the true distribution, so three
numbers say how well the model learned it:

* next-word accuracy on held-out sentences against the grammar's optimum
  (no model can beat it: the corpus is random, e.g. which dish a cook makes);
* held-out cross-entropy against the grammar's entropy (the optimum loss);
* the share of generated sentences the grammar accepts (sampling at
  temperature 1, i.e. from the model's own distribution).

Picture: the training loss falling to the grammar's floor, and the accuracy
beside the unigram baseline and the optimum.
"""
from __future__ import annotations

import argparse

import torch

from ..data import grammar
from ..nn.transformer import TransformerConfig, TransformerLM
from . import _common, _text

NAME = "lm"
HELP = "train the TransformerLM on the corpus, compare with the grammar's optimum, generate text"

# (full, --quick)
SETTINGS = {
    "steps": (1500, 60), "batch_size": (32, 16), "context": (32, 16), "d_model": (64, 32),
    "n_layers": (2, 1), "n_heads": (4, 2), "lr": (3e-3, 3e-3), "generate": (400, 60),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _text.add_corpus_arguments(parser)
    parser.add_argument("--steps", type=_common.positive_int, default=None,
                        help=f"training steps (default {SETTINGS['steps'][0]}, --quick {SETTINGS['steps'][1]})")
    parser.add_argument("--temperature", type=_common.positive_float, default=1.0,
                        help="sampling temperature of the generated text (default 1: the model's own "
                             "distribution, which is what the acceptance share measures)")
    parser.add_argument("--top-k", type=_common.positive_int, default=None, help="sample among the k likeliest words")


def build_model(vocab_size: int, quick: bool, backend: str) -> TransformerLM:
    pick = 1 if quick else 0
    config = TransformerConfig(vocab_size=vocab_size, context_length=SETTINGS["context"][pick],
                               d_model=SETTINGS["d_model"][pick], n_layers=SETTINGS["n_layers"][pick],
                               n_heads=SETTINGS["n_heads"][pick], backend=backend)
    return TransformerLM(config)


def generate_text(model: TransformerLM, tokenizer, num_words: int, temperature: float, top_k, seed: int,
                  device) -> list[str]:
    """``num_words`` words sampled after an end of sentence ("."), as words."""
    start = torch.tensor([tokenizer.encode(["."])], device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    ids = model.generate(start, num_words, temperature=temperature, top_k=top_k, generator=gen)
    return tokenizer.decode_words(ids[0, 1:].tolist())


def plot_accuracy(report: dict, out_dir: str) -> str:
    fig = _common.new_figure(5.0, 3.4)
    ax = fig.add_subplot(1, 1, 1)
    bars = [("model", report["test_accuracy"])]
    if "optimal_accuracy" in report:
        bars = [("unigram\nbaseline", report["unigram_accuracy"])] + bars + \
               [("grammar's\noptimum", report["optimal_accuracy"])]
    ax.bar([b[0] for b in bars], [b[1] for b in bars], color=["#bbb", "#4477aa", "#222"][-len(bars):])
    for i, (_, v) in enumerate(bars):
        ax.text(i, v + 0.01, f"{v:.3f}", ha="center")
    ax.set_ylim(0, 1)
    ax.set_ylabel("next-word accuracy (held-out sentences)")
    ax.set_title("TransformerLM against the grammar")
    return _common.save_figure(fig, out_dir, "lm_accuracy.png")


def run(args: argparse.Namespace) -> dict:
    device = _common.resolve_device(args.device)
    pick = 1 if args.quick else 0
    data = _text.load_text(args.corpus, args.quick)
    model = build_model(len(data.tokenizer), args.quick, args.backend).to(device)
    context = model.config.context_length
    result, report = _text.train_and_score(model, data, context, args, SETTINGS, desc="lm")

    words = generate_text(model, data.tokenizer, SETTINGS["generate"][pick], args.temperature, args.top_k,
                          args.seed, device)
    sentences = grammar.split_sentences(words)
    print("generated:")
    for s in sentences[:6]:
        mark = "  " if grammar.accepts(s) else "✗ "
        print(f"  {mark}{' '.join(s)}")
    metrics = {
        "parameters": model.num_parameters(), "steps": result.steps, "final_train_loss": result.final_loss,
        "train_tokens_per_s": result.tokens_per_s, **report,
        "generated_sentences": len(sentences),
    }
    if data.from_grammar:
        metrics["generated_accepted_share"] = grammar.acceptance(words).share
    optimum = report.get("optimal_loss")
    metrics["pngs"] = [
        _text.plot_losses(result.losses, optimum, args.out, "lm_loss.png",
                          f"TransformerLM ({model.num_parameters():,} parameters, backend={args.backend})"),
        plot_accuracy(report, args.out),
    ]
    return metrics
