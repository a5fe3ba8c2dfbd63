"""fusedseq.nn.embedding.NextWordModel: fused vs reference, the PyTorch
counterpart with weights copied, what an embedding is, cosine neighbours,
training, the vocabulary in the state dict, and bad arguments."""
from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import dtype_params, rel_err, tolerance
from fusedseq.nn.embedding import NextWordModel

# A toy grammar with two clear categories. Every sentence is "NOUN VERB .",
# an animal taking an animal verb, a vehicle a vehicle verb, so all animals
# share one next-word distribution and all vehicles another.
ANIMALS = ["cat", "dog", "cow", "horse"]
VEHICLES = ["car", "bus", "truck", "train"]
ANIMAL_VERBS = ["eats", "sleeps", "runs"]
VEHICLE_VERBS = ["drives", "stops", "honks"]
VOCAB = ANIMALS + VEHICLES + ANIMAL_VERBS + VEHICLE_VERBS + ["."]


def toy_stream(gen: torch.Generator, n_sentences: int) -> torch.Tensor:
    """``n_sentences`` random sentences of the toy grammar, as one id stream."""
    ids = []
    for _ in range(n_sentences):
        nouns, verbs = (ANIMALS, ANIMAL_VERBS) if torch.rand((), generator=gen) < 0.5 else (VEHICLES, VEHICLE_VERBS)
        noun = nouns[int(torch.randint(len(nouns), (), generator=gen))]
        verb = verbs[int(torch.randint(len(verbs), (), generator=gen))]
        ids += [VOCAB.index(noun), VOCAB.index(verb), VOCAB.index(".")]
    return torch.tensor(ids)


def windows(stream: torch.Tensor, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every window of ``T`` words and the words that follow them: (n, T) each.
    Windows start at every word, so every word is read from a zero state."""
    w = stream.unfold(0, T + 1, 1)                                           # (n, T + 1)
    return w[:, :-1], w[:, 1:]


def train(model: NextWordModel, x, y, steps: int, lr: float, weight_decay: float = 0.0) -> list[float]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    losses = []
    for _ in range(steps):
        _, loss = model(x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def randomized_model(make, **kwargs) -> NextWordModel:
    model = NextWordModel(VOCAB, **kwargs).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(make(*p.shape, dtype=torch.float64, scale=0.4))
    return model


# ------------------------------------------------------------- backends --
@pytest.mark.ops("rnn", "rnn_backward")
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("dtype", dtype_params([torch.float32, torch.float64]))
def test_fused_matches_reference(dtype, nonlinearity, device, make):
    """Logits, loss and every gradient of both backends (dtype, device)
    against the reference backend in float64 on the same weights."""
    model = randomized_model(make, embed_dim=6, hidden_size=10, nonlinearity=nonlinearity)
    model.to(dtype).double()
    idx = torch.randint(0, len(VOCAB), (3, 8), generator=make.gen)
    targets = torch.randint(0, len(VOCAB), (3, 8), generator=make.gen)

    def run(m, device):
        m.zero_grad(set_to_none=True)
        logits, loss = m(idx.to(device), targets.to(device))
        loss.backward()
        return logits.detach(), loss.detach(), {n: p.grad for n, p in m.named_parameters()}

    ref_logits, ref_loss, ref_grads = run(model.set_backend("reference"), "cpu")
    tol = tolerance(dtype)
    for backend in ("fused", "reference"):
        m = copy.deepcopy(model).to(device=device, dtype=dtype).set_backend(backend)
        logits, loss, grads = run(m, device)
        assert logits.dtype == dtype and logits.device.type == device
        assert rel_err(logits, ref_logits) <= tol, f"{backend}: logits"
        assert abs(loss.item() - ref_loss.item()) <= tol * ref_loss.item(), f"{backend}: loss"
        for name, g in grads.items():
            err = rel_err(g, ref_grads[name])
            assert err <= tol, f"{backend}: grad of {name}: relative error {err:.3g} > {tol:.3g}"
        e = m.embeddings()
        assert rel_err(e, model.embeddings()) <= tol, f"{backend}: embeddings"


@pytest.mark.parametrize("backend", ["fused", "reference"])
def test_matches_torch_modules_with_weights_copied(backend, make):
    """nn.Embedding -> torch.nn.RNN -> nn.Linear loaded from the model's own
    state dict compute the same logits: the RNN's parameter names are
    torch.nn.RNN's."""
    model = randomized_model(make, embed_dim=5, hidden_size=7, backend=backend)
    embedding = nn.Embedding(len(VOCAB), 5).double()
    rnn = nn.RNN(5, 7, batch_first=True).double()
    head = nn.Linear(7, len(VOCAB)).double()
    embedding.load_state_dict(model.token_embedding.state_dict())
    rnn.load_state_dict(model.rnn.state_dict())
    head.load_state_dict(model.head.state_dict())
    idx = torch.randint(0, len(VOCAB), (4, 6), generator=make.gen)
    logits, _ = model(idx)
    assert rel_err(logits, head(rnn(embedding(idx))[0])) <= 1e-12


def test_set_backend():
    model = NextWordModel(VOCAB, embed_dim=4, hidden_size=4)
    assert model.backend == "fused" and model.rnn.backend == "fused"
    assert model.set_backend("reference") is model
    assert model.rnn.backend == "reference"
    model.backend = "fused"
    assert model.rnn.backend == "fused"
    with pytest.raises(ValueError, match="backend"):
        model.backend = "cudnn"
    assert NextWordModel(VOCAB, backend="reference").rnn.backend == "reference"


# ------------------------------------------------------ the embeddings --
def test_an_embedding_is_the_hidden_state_after_reading_the_word(make):
    model = randomized_model(make, embed_dim=6, hidden_size=9)
    r = model.rnn
    all_words = model.embeddings()
    assert all_words.shape == (len(VOCAB), 9) and not all_words.requires_grad
    for i, word in enumerate(VOCAB):
        # From a zero state the recurrent term vanishes: h = tanh(W_ih e + b_ih + b_hh).
        e = model.token_embedding.weight[i]
        by_hand = torch.tanh(r.weight_ih_l0 @ e + r.bias_ih_l0 + r.bias_hh_l0)
        assert rel_err(model.embedding(word), by_hand) <= 1e-12
        assert rel_err(all_words[i], by_hand) <= 1e-12
        # ... and it is the layer the output reads: head(embedding) = the logits after the word.
        logits, _ = model(torch.tensor([[i]]))
        assert rel_err(model.head(all_words[i]), logits[0, 0]) <= 1e-12


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_most_similar_and_similarity(nonlinearity, make):
    model = randomized_model(make, embed_dim=6, hidden_size=9, nonlinearity=nonlinearity)
    unit = F.normalize(model.embeddings(), dim=-1)
    cosine = unit @ unit.T                                                  # (V, V)
    for i, word in enumerate(VOCAB):
        ranked = model.most_similar(word, k=5)
        words, sims = [w for w, _ in ranked], [s for _, s in ranked]
        assert len(ranked) == 5 and word not in words
        assert len(set(words)) == 5
        assert sims == sorted(sims, reverse=True)
        assert all(-1.0 <= s <= 1.0 for s in sims)
        for w, s in ranked:
            assert abs(s - cosine[i, VOCAB.index(w)].item()) < 1e-12
            assert abs(s - model.similarity(word, w)) < 1e-12
        # Nothing left out ranks above the last one kept.
        others = [cosine[i, j].item() for j, w in enumerate(VOCAB) if w != word and w not in words]
        assert max(others) <= sims[-1] + 1e-15
        assert abs(model.similarity(word, word) - 1.0) < 1e-12
    everyone = model.most_similar("cat", k=len(VOCAB) - 1)
    assert sorted(w for w, _ in everyone) == sorted(set(VOCAB) - {"cat"})
    for a, b in [("cat", "bus"), ("eats", "."), ("horse", "train")]:
        assert model.similarity(a, b) == model.similarity(b, a)


def test_unknown_words_and_bad_k():
    model = NextWordModel(VOCAB, embed_dim=4, hidden_size=4)
    with pytest.raises(ValueError, match="'zebra'"):
        model.embedding("zebra")
    with pytest.raises(ValueError, match="'zebra'"):
        model.most_similar("zebra")
    with pytest.raises(ValueError, match="'zebra'"):
        model.similarity("cat", "zebra")
    with pytest.raises(ValueError, match="'Cat'"):  # case matters
        model.similarity("Cat", "dog")
    for k in (0, -1, len(VOCAB)):
        with pytest.raises(ValueError, match="'k'"):
            model.most_similar("cat", k=k)
    with pytest.raises(TypeError, match="'k'"):
        model.most_similar("cat", k=2.0)


# --------------------------------------------------------------- training --
@pytest.mark.parametrize("backend", ["fused", "reference"])
def test_a_few_training_steps_lower_the_loss(backend):
    torch.manual_seed(0)
    model = NextWordModel(VOCAB, embed_dim=8, hidden_size=16, backend=backend)
    x, y = windows(toy_stream(torch.Generator().manual_seed(1), 60), T=6)
    losses = train(model, x, y, steps=30, lr=0.03)
    # Start near log(15) = 2.7; the grammar's best (verbs and "." are forced
    # by context, nouns and verbs are draws among 8 and 3) is about 0.8.
    assert losses[0] > 2.3
    assert losses[-1] < 0.5 * losses[0], f"loss went {losses[0]:.3f} -> {losses[-1]:.3f}"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_words_of_a_category_are_each_others_nearest_neighbours(seed):
    """After training on the toy grammar, every animal's 3 nearest words are
    the other animals, every vehicle's the other vehicles, and the closest
    pair across the categories is further apart than the furthest within.
    (Weight decay shrinks what the output never reads, which would otherwise
    keep part of each word's random initial direction.)"""
    torch.manual_seed(seed)
    model = NextWordModel(VOCAB, embed_dim=8, hidden_size=8)
    x, y = windows(toy_stream(torch.Generator().manual_seed(100 + seed), 200), T=3)
    train(model, x, y, steps=100, lr=0.03, weight_decay=0.5)
    for category in (ANIMALS, VEHICLES):
        for word in category:
            neighbours = {w for w, _ in model.most_similar(word, k=3)}
            assert neighbours == set(category) - {word}, f"{word}: {model.most_similar(word, k=5)}"
    within = min(model.similarity(a, b) for c in (ANIMALS, VEHICLES) for a in c for b in c if a != b)
    across = max(model.similarity(a, b) for a in ANIMALS for b in VEHICLES)
    assert within > across + 0.3, f"within {within:.3f}, across {across:.3f}"


# -------------------------------------------------- vocabulary and state --
def test_the_vocabulary_travels_in_the_state_dict():
    torch.manual_seed(0)
    model = NextWordModel(VOCAB, embed_dim=4, hidden_size=6)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    other = NextWordModel(list(reversed(VOCAB)), embed_dim=4, hidden_size=6)
    other.load_state_dict(state)
    assert other.vocab == VOCAB
    assert other.index("horse") == VOCAB.index("horse")
    assert torch.equal(other.embedding("horse"), model.embedding("horse"))
    assert other.most_similar("bus", 4) == model.most_similar("bus", 4)
    smaller = NextWordModel(VOCAB[:-1], embed_dim=4, hidden_size=6)
    with pytest.raises((ValueError, RuntimeError)):
        smaller.load_state_dict(state)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(vocab=[]), ValueError, "vocab"),
    (dict(vocab="cat dog"), TypeError, "vocab"),
    (dict(vocab=["cat", "dog", "cat"]), ValueError, "repeat.*cat"),
    (dict(vocab=["cat", ""]), ValueError, "vocab"),
    (dict(vocab=["cat", 3]), ValueError, "vocab"),
    (dict(vocab=VOCAB, embed_dim=0), ValueError, "embed_dim"),
    (dict(vocab=VOCAB, hidden_size=-2), ValueError, "hidden_size"),
    (dict(vocab=VOCAB, hidden_size=4.0), TypeError, "hidden_size"),
    (dict(vocab=VOCAB, nonlinearity="sigmoid"), ValueError, "nonlinearity"),
    (dict(vocab=VOCAB, backend="fast"), ValueError, "backend"),
])
def test_constructor_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        NextWordModel(**kwargs)


def test_forward_rejects_bad_input():
    model = NextWordModel(VOCAB, embed_dim=4, hidden_size=4)
    with pytest.raises(TypeError, match="'idx'"):
        model(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="'idx'"):
        model(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="'idx'"):
        model(torch.tensor([[0, len(VOCAB)]]))
    with pytest.raises(ValueError, match="'targets'"):
        model(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 2, dtype=torch.long))
