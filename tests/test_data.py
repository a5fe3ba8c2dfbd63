"""fusedseq.data: the tokenizer, the grammar of the default corpus, the corpus helpers."""
from __future__ import annotations

import itertools
import json
import math
import random
import unicodedata

import pytest
import torch

from fusedseq.data import (CATEGORIES, WordTokenizer, accepts, acceptance, category_of,
                           default_corpus_path, grammar, lm_windows, load_corpus,
                           model_accuracy, next_word_distribution, optimal_accuracy,
                           random_batches, sample_sentences, sentences_from_text, tokenize,
                           unigram_accuracy)
from fusedseq.data.make_default_corpus import NUM_SENTENCES, default_corpus_text

FUNCTION_WORDS = {"on", "it", "is", "and", "the", "when", "."}


@pytest.fixture(scope="module")
def samples():
    return sample_sentences(20_000, seed=12345)


# ----------------------------------------------------------------- tokenizer

# Letters of several scripts (with a decomposed accent and Devanagari vowel
# signs, which are combining marks), digits, apostrophes, punctuation,
# symbols, and several kinds of whitespace.
_ALPHABET = (list("abcXYZ") + list("éÉñÜßİ") + ["e\u0301", "A\u0308"] + list("Σσςλ") + list("жЯ")
             + list("漢字") + ["क", "ि", "ा", "त"] + list("0123456789") + ["'", "’"]
             + list(".,!?;:") + list("-()\"€_😀") + [" ", "  ", "\n", "\t", "\u00a0", "\u2003"])


def _random_text(rng: random.Random, length: int) -> str:
    return "".join(rng.choice(_ALPHABET) for _ in range(length))


@pytest.mark.parametrize("seed", range(5))
def test_tokenizer_round_trip_on_random_text(seed):
    rng = random.Random(seed)
    texts = [_random_text(rng, rng.randint(0, 80)) for _ in range(200)]
    tok = WordTokenizer.from_text(texts)
    for text in texts:
        tokens = tokenize(text)
        normalized = unicodedata.normalize("NFC", text.lower())
        # Nothing is lost but whitespace, no token is empty or holds whitespace...
        assert "".join(tokens) == "".join(normalized.split())
        assert all(t and not any(c.isspace() for c in t) for t in tokens)
        # ...re-tokenizing the normalized text changes nothing...
        assert tokenize(" ".join(tokens)) == tokens
        # ...and decode(encode(t)) is the normalized text.
        ids = tok.encode(text)
        assert len(ids) == len(tokens)
        assert tok.decode(ids) == " ".join(tokens)
        assert tok.decode(torch.tensor(ids, dtype=torch.long)) == " ".join(tokens)


def test_tokenize_rules():
    assert tokenize("Don't PANIC!  Café, naïve; l'été?") == \
        ["don't", "panic", "!", "café", ",", "naïve", ";", "l'été", "?"]
    assert tokenize("Cafe\u0301") == ["café"]           # NFC: one word, composed
    assert tokenize("किताब पढ़ो.") == ["किताब", "पढ़ो", "."]  # vowel signs stay in their word
    assert tokenize("3.14 (x-y)") == ["3", ".", "14", "(", "x", "-", "y", ")"]
    assert tokenize("  \n\t ") == []
    with pytest.raises(TypeError, match="text must be a str"):
        tokenize(b"bytes")


def test_vocabulary_is_deterministic():
    rng = random.Random(7)
    lines = [" ".join(rng.choice(["a", "b", "c", "d", "é", "x", "!"]) for _ in range(rng.randint(1, 9)))
             for _ in range(300)]
    tok = WordTokenizer.from_text(lines)
    shuffled = lines[:]
    rng.shuffle(shuffled)
    assert WordTokenizer.from_text("\n".join(shuffled)) == tok  # order of the text does not matter
    counts = {w: sum(tokenize(l).count(w) for l in lines) for w in tok.itos}
    keys = [(-counts[w], w) for w in tok.itos]
    assert keys == sorted(keys)  # by falling count, then alphabetically

    text = "b b b a a c c d"
    assert WordTokenizer.from_text(text).itos == ("b", "a", "c", "d")
    assert WordTokenizer.from_text(text, min_count=2).itos == ("b", "a", "c")
    with_unk = WordTokenizer.from_text(text, specials=("<unk>",))
    assert with_unk.itos == ("<unk>", "b", "a", "c", "d") and with_unk.specials == ("<unk>",)
    assert len(with_unk) == 5 and "c" in with_unk and "e" not in with_unk
    assert with_unk.stoi["c"] == 3 and with_unk.index("c") == 3


def test_unknown_word_errors():
    tok = WordTokenizer.from_text(load_corpus())
    with pytest.raises(ValueError, match=r"unknown word 'cok'.*closest known: 'cook'"):
        tok.encode("the cok makes pie .")
    with pytest.raises(ValueError, match=r"unknown word 'sunnyy'.*'sunny'"):
        tok.index("sunnyy")
    with pytest.raises(ValueError, match="needs a tokenizer built with the '<unk>' special"):
        tok.encode("the cok", unknown="unk")
    with pytest.raises(ValueError, match="unknown must be 'error' or 'unk'"):
        tok.encode("the cook", unknown="skip")

    tok = WordTokenizer.from_text(load_corpus(), specials=("<unk>",))
    ids = tok.encode("the zebra makes pie .", unknown="unk")
    assert tok.decode(ids) == "the <unk> makes pie ."
    with pytest.raises(ValueError, match=r"unknown word 'zebra'.*unknown='unk'"):
        tok.encode("the zebra makes pie .")


def test_tokenizer_bad_arguments_and_checkpoint():
    tok = WordTokenizer.from_text("a b c", specials=("<unk>",))
    with pytest.raises(ValueError, match=r"id 4 at position 1 is out of range \[0, 4\)"):
        tok.decode([0, 4])
    with pytest.raises(TypeError, match="ids must be integers"):
        tok.decode([1.0])
    with pytest.raises(ValueError, match="no tokens"):
        WordTokenizer.from_text(" \n ")
    with pytest.raises(ValueError, match="min_count must be an int >= 1"):
        WordTokenizer.from_text("a b", min_count=0)
    with pytest.raises(TypeError, match="specials must be a sequence"):
        WordTokenizer.from_text("a b", specials="<unk>")
    with pytest.raises(ValueError, match="duplicate"):
        WordTokenizer(["a", "b", "a"])

    state = json.loads(json.dumps(tok.to_dict()))  # survives a JSON (or torch.save) round trip
    again = WordTokenizer.from_dict(state)
    assert again == tok and again.encode("c a") == tok.encode("c a")
    with pytest.raises(ValueError, match="not a dict made by WordTokenizer.to_dict"):
        WordTokenizer.from_dict({"itos": ["a"]})


# ------------------------------------------------------------------- corpus

def test_load_corpus_errors(tmp_path):
    for name, content in [("empty.txt", b""), ("blank.txt", b" \n\t\n  ")]:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ValueError, match=rf"{name}.*is empty"):
            load_corpus(path)
    missing = tmp_path / "nowhere.txt"
    with pytest.raises(FileNotFoundError, match="nowhere.txt"):
        load_corpus(str(missing))
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt.*not UTF-8.*0xe9 at offset 3"):
        load_corpus(latin1)
    with pytest.raises(ValueError, match="is a directory"):
        load_corpus(tmp_path)
    with pytest.raises(TypeError, match="path must be"):
        load_corpus(3)

    utf8 = tmp_path / "mine.txt"
    utf8.write_bytes("\ufeffÜber den Wolken. Ça va ?\n".encode("utf-8"))  # BOM dropped
    text = load_corpus(utf8)
    assert sentences_from_text(text) == [["über", "den", "wolken", "."], ["ça", "va", "?"]]


def test_default_corpus_is_the_grammars():
    text = load_corpus()
    assert default_corpus_path().read_bytes() == default_corpus_text().encode("utf-8")
    lines = text.split("\n")
    assert lines[-1] == "" and len(lines) - 1 == NUM_SENTENCES
    rejected = [l for l in lines[:-1] if not accepts(l.split(" "))]
    assert rejected == []
    assert sentences_from_text(text) == [l.split(" ") for l in lines[:-1]]
    # The corpus covers the grammar's vocabulary.
    assert set(WordTokenizer.from_text(text).itos) == set(grammar.vocabulary())


def test_sentences_from_text_keeps_the_tail():
    assert sentences_from_text("A b. c d . e") == [["a", "b", "."], ["c", "d", "."], ["e"]]


def test_lm_windows_shapes_and_shift():
    ids = torch.randint(0, 50, (103,), generator=torch.Generator().manual_seed(1))
    for context_length, stride, expected in [(10, None, 10), (10, 3, 31), (102, None, 1), (1, 1, 102)]:
        inputs, targets = lm_windows(ids, context_length, stride)
        step = stride or context_length
        assert inputs.shape == targets.shape == (expected, context_length)
        assert inputs.is_contiguous() and targets.dtype == ids.dtype
        for i in range(expected):
            assert torch.equal(inputs[i], ids[i * step: i * step + context_length])
            assert torch.equal(targets[i], ids[i * step + 1: i * step + context_length + 1])
    with pytest.raises(ValueError, match=r"at least context_length \+ 1 = 104 ids"):
        lm_windows(ids, 103)
    with pytest.raises(ValueError, match="must be 1-D"):
        lm_windows(ids.view(1, -1), 4)
    with pytest.raises(ValueError, match="integer tensor"):
        lm_windows(ids.float(), 4)
    with pytest.raises(ValueError, match="context_length must be >= 1"):
        lm_windows(ids, 0)


def test_random_batches_follow_the_generator():
    def take(seed, n):
        return list(random_batches(100, 8, torch.Generator().manual_seed(seed), num_batches=n))

    a, b, c = take(3, 6), take(3, 6), take(4, 6)
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and len(a) == 6
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    assert all(x.shape == (8,) and x.dtype == torch.int64 for x in a)
    assert 0 <= min(int(x.min()) for x in a) and max(int(x.max()) for x in a) < 100

    # Resuming from a generator state saved after batch 2 gives batches 3, 4, ...
    g = torch.Generator().manual_seed(3)
    stream = random_batches(100, 8, g)
    first = [next(stream) for _ in range(2)]
    state = g.get_state()
    g2 = torch.Generator()
    g2.set_state(state)
    resumed = list(itertools.islice(random_batches(100, 8, g2), 4))
    assert all(torch.equal(x, y) for x, y in zip(first + resumed, a))

    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        random_batches(100, 8, 3)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        random_batches(100, 0, torch.Generator())


# ------------------------------------------------------------------ grammar

def _all_prefixes():
    return {words[:i] for words in grammar.sentence_probabilities() for i in range(len(words))}


def test_grammar_size_and_categories():
    probs = grammar.sentence_probabilities()
    assert 300 <= len(probs) <= 50_000
    assert math.isclose(sum(probs.values()), 1.0, abs_tol=1e-12)
    assert all(words[-1] == "." and "." not in words[:-1] for words in probs)
    vocab = set(grammar.vocabulary())
    content = [w for words in CATEGORIES.values() for w in words]
    assert len(content) == len(set(content))  # categories are disjoint
    assert vocab == set(content) | FUNCTION_WORDS
    assert category_of("sunny") == "weather" and category_of("cooks") == "verb"
    assert category_of("the") is None and category_of("zebra") is None


def test_next_word_distribution_is_exact():
    for prefix in _all_prefixes():
        dist = next_word_distribution(prefix)
        assert math.isclose(sum(dist.values()), 1.0, abs_tol=1e-12)
        assert min(dist.values()) > 0
    assert next_word_distribution([]) == pytest.approx({"on": 0.5, "when": 0.3, "the": 0.2})
    # Sunny: hot with probability .1, the cook's taste within hot and cold.
    assert next_word_distribution("on monday it is sunny and the cook makes") == pytest.approx(
        {"soup": .06, "stew": .03, "curry": .01, "sandwich": .54, "salad": .27, "sushi": .09})
    # Unsaid weather: the baker's bread averaged over the weather prior.
    assert next_word_distribution("the baker bakes") == pytest.approx(
        {"pie": .345, "bread": .36, "cake": .295})
    with pytest.raises(ValueError, match="no sentence of the grammar starts with 'the sunny'"):
        next_word_distribution(["the", "sunny"])


def test_next_word_distribution_matches_samples(samples):
    counts: dict[tuple, dict[str, int]] = {}
    for words in samples:
        for i, w in enumerate(words):
            bucket = counts.setdefault(tuple(words[:i]), {})
            bucket[w] = bucket.get(w, 0) + 1
    checked = 0
    for prefix, bucket in counts.items():
        n = sum(bucket.values())
        dist = next_word_distribution(prefix)
        assert set(bucket) <= set(dist)
        if n < 300 or len(dist) < 2:
            continue
        # Pearson chi-square against the exact distribution; the bound is far
        # in the tail (df + 8 sd), so a wrong rule fails and chance does not.
        chi2 = sum((bucket.get(w, 0) - n * p) ** 2 / (n * p) for w, p in dist.items())
        df = len(dist) - 1
        assert chi2 < df + 8 * math.sqrt(2 * df), (prefix, bucket, dist)
        checked += 1
    assert checked >= 20


def test_optimal_accuracy(samples):
    best = optimal_accuracy()
    unigram = unigram_accuracy()
    bigram = grammar.ngram_accuracy(2)
    assert 0.5 < best < 0.9 and unigram < 0.2
    assert unigram < bigram < best - 0.05  # context beyond the previous word pays
    assert grammar.ngram_accuracy(20) == pytest.approx(best, abs=1e-12)
    # Every sentence is "." once and "the" once: the unigram baseline is 1 / mean length.
    mean_length = sum(len(s) for s in samples) / len(samples)
    assert unigram == pytest.approx(1 / 9.6, abs=1e-12) and mean_length == pytest.approx(9.6, abs=0.05)
    # The Bayes predictor scores the exact optimum on samples (up to sampling noise).
    assert optimal_accuracy(samples) == pytest.approx(best, abs=0.005)
    assert model_accuracy(samples[:5000], grammar.best_next_word) == pytest.approx(best, abs=0.01)
    # A predictor that ignores context does as well as the unigram baseline at most.
    assert model_accuracy(samples[:5000], lambda prefix: "the") == pytest.approx(unigram, abs=0.01)


def test_model_accuracy_input_forms():
    sentences = [["when", "it", "is", "sunny", "the", "cook", "makes", "salad", "."],
                 ["the", "baker", "bakes", "pie", "on", "friday", "."]]
    nested = [[grammar.best_next_word(p) for p, _ in grammar.prediction_positions(s)] for s in sentences]
    flat = [w for s in nested for w in s]
    expected = sum(g == t for s, n in zip(sentences, nested) for g, t in zip(n, s)) / 16
    assert 0 < expected < 1
    assert model_accuracy(sentences, nested) == model_accuracy(sentences, flat) == expected
    assert model_accuracy(sentences, grammar.best_next_word) == expected
    assert model_accuracy(sentences, sentences) == 1.0
    with pytest.raises(ValueError, match="15 predicted words for 16 positions"):
        model_accuracy(sentences, flat[:-1])
    with pytest.raises(ValueError, match=r"predictions\[1\] has 6 words, sentence 1 has 7"):
        model_accuracy(sentences, [nested[0], nested[1][:-1]])


def test_accepts_rejects_broken_sentences(samples):
    rng = random.Random(99)
    for words in samples[:300]:
        assert accepts(words)
        shuffled = words[:]
        while shuffled == words:
            rng.shuffle(shuffled)
        # All words of a sentence differ and sit in fixed slots, so any other order is wrong.
        assert not accepts(shuffled)
        assert not accepts(words[:-1]) and not accepts(words + ["."])
    assert accepts("the baker bakes pie on friday .")
    assert not accepts("the baker makes pie on friday .")  # the baker only bakes
    assert not accepts("the cook bakes pie on friday .")   # nor does the cook bake
    assert not accepts("when it is sunny the chef prepares bread .")  # bread is baked


def test_acceptance_of_a_generated_stream():
    good = sample_sentences(3, seed=1)
    stream = [w for s in good for w in s] + ["the", "pie", "cook", "."] + ["on", "monday", "it"]
    assert acceptance(stream) == (3, 4, 0.75)
    assert acceptance(" ".join(stream)).share == 0.75
    assert acceptance(["on", "monday"]) == (0, 0, 0.0)


def test_sampling_is_seeded():
    assert sample_sentences(50, seed=3) == sample_sentences(50, seed=3)
    assert sample_sentences(50, seed=3) != sample_sentences(50, seed=4)
    with pytest.raises(ValueError, match="n must be >= 0"):
        sample_sentences(-1)
