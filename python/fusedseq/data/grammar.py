"""The grammar that writes the default corpus: weather, cooks, dishes and days.

Every sentence is an independent draw. First the hidden facts of one day are
drawn, then a template says some of them in words::

    1. template  on-day .5        when .3          cook-first .2
    2. day       monday .. sunday, uniform (days are interchangeable on purpose:
                 a model should learn that they form one category)
       weather   sunny .30  cloudy .20  rainy .20  windy .10  foggy .10  snowy .10
       cook      cook .25  chef .20  baker .15  waiter .15  grandma .15  student .10
    3. verb, by the cook
                 cook     makes .5   cooks .5
                 chef     cooks .4   prepares .6
                 baker    bakes 1
                 waiter   serves 1
                 grandma  makes .6   bakes .4
                 student  makes .3   buys .7
    4. dish, by the verb, the weather and the cook
       "bakes" -> a baked dish; the colder the day, the heartier:
                 sunny                  cake .6   bread .3   pie .1
                 cloudy, windy          bread .5  pie .25    cake .25
                 rainy, foggy, snowy    pie .6    bread .3   cake .1
       any other verb -> a hot dish with probability
                 sunny .1  cloudy .4  windy .5  foggy .7  rainy .8  snowy .9
       else a cold one; which hot or cold dish is the cook's taste:
                 cook     soup .6   stew .3   curry .1  |  sandwich .6  salad .3     sushi .1
                 chef     curry .6  stew .3   soup .1   |  sushi .6     salad .3     sandwich .1
                 grandma  stew .6   soup .3   curry .1  |  salad .6     sandwich .3  sushi .1
                 student  curry .5  soup .4   stew .1   |  sandwich .5  sushi .4     salad .1
                 waiter   a third each              |  a third each
    5. words
       on-day       on DAY it is WEATHER and the COOK VERB DISH .
       when         when it is WEATHER the COOK VERB DISH .
       cook-first   the COOK VERB DISH on DAY .          (the weather stays unsaid)

A sentence is a list of lowercase words ending with the word ".". So that a
model must use its context, the dish depends on the weather said six words
earlier and on the cook said two words earlier (and, in a cook-first
sentence, on a weather it can only average over); the verb depends on the
cook. The words of one category (CATEGORIES) occur in the same places.

The set of sentences is finite (2,970 distinct), so everything is exact:
``next_word_distribution(prefix)`` is the true distribution of the next word
given the words of the sentence so far, and ``optimal_accuracy()`` is the
best next-word accuracy any model can reach. An accuracy here is always
per position: every word of a sentence is predicted from the words before it
in the same sentence, the first word from the empty prefix and the final "."
included. A model that reads a stream of sentences sees the "." that ended
the previous sentence, which tells it that a new one starts; sentences are
independent, so seeing further back cannot help it.

Sampling uses :class:`random.Random` and nothing but its ``random()`` method,
whose stream Python guarantees across versions for the same integer seed;
that is what keeps the shipped corpus reproducible byte for byte.
"""
from __future__ import annotations

import functools
import random
from typing import Callable, Iterable, Mapping, NamedTuple, Sequence, Union

END = "."

# --------------------------------------------------------------------- tables
# Each distribution is a tuple of (outcome, probability) pairs, in the order
# the sampler walks them (the order matters only for reproducing the corpus).

TEMPLATES = (("on-day", 0.5), ("when", 0.3), ("cook-first", 0.2))

DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
DAY_DIST = tuple((day, 1.0 / len(DAYS)) for day in DAYS)

WEATHER_DIST = (("sunny", 0.30), ("cloudy", 0.20), ("rainy", 0.20),
                ("windy", 0.10), ("foggy", 0.10), ("snowy", 0.10))

COOK_DIST = (("cook", 0.25), ("chef", 0.20), ("baker", 0.15),
             ("waiter", 0.15), ("grandma", 0.15), ("student", 0.10))

VERB_BY_COOK = {
    "cook": (("makes", 0.5), ("cooks", 0.5)),
    "chef": (("cooks", 0.4), ("prepares", 0.6)),
    "baker": (("bakes", 1.0),),
    "waiter": (("serves", 1.0),),
    "grandma": (("makes", 0.6), ("bakes", 0.4)),
    "student": (("makes", 0.3), ("buys", 0.7)),
}

HOT_DISHES = ("soup", "stew", "curry")
COLD_DISHES = ("salad", "sandwich", "sushi")
BAKED_DISHES = ("pie", "bread", "cake")

BAKED_BY_WEATHER = {
    "sunny": (("cake", 0.6), ("bread", 0.3), ("pie", 0.1)),
    "cloudy": (("bread", 0.5), ("pie", 0.25), ("cake", 0.25)),
    "windy": (("bread", 0.5), ("pie", 0.25), ("cake", 0.25)),
    "rainy": (("pie", 0.6), ("bread", 0.3), ("cake", 0.1)),
    "foggy": (("pie", 0.6), ("bread", 0.3), ("cake", 0.1)),
    "snowy": (("pie", 0.6), ("bread", 0.3), ("cake", 0.1)),
}

HOT_PROBABILITY = {"sunny": 0.1, "cloudy": 0.4, "windy": 0.5, "foggy": 0.7, "rainy": 0.8, "snowy": 0.9}

_THIRD = 1.0 / 3.0
TASTE = {  # cook -> (hot dish distribution, cold dish distribution)
    "cook": ((("soup", 0.6), ("stew", 0.3), ("curry", 0.1)),
             (("sandwich", 0.6), ("salad", 0.3), ("sushi", 0.1))),
    "chef": ((("curry", 0.6), ("stew", 0.3), ("soup", 0.1)),
             (("sushi", 0.6), ("salad", 0.3), ("sandwich", 0.1))),
    "grandma": ((("stew", 0.6), ("soup", 0.3), ("curry", 0.1)),
                (("salad", 0.6), ("sandwich", 0.3), ("sushi", 0.1))),
    "student": ((("curry", 0.5), ("soup", 0.4), ("stew", 0.1)),
                (("sandwich", 0.5), ("sushi", 0.4), ("salad", 0.1))),
    "waiter": (tuple((d, _THIRD) for d in HOT_DISHES), tuple((d, _THIRD) for d in COLD_DISHES)),
    # The baker only bakes, so never reaches the hot/cold choice.
}

CATEGORIES: dict[str, tuple[str, ...]] = {
    "day": DAYS,
    "weather": tuple(w for w, _ in WEATHER_DIST),
    "cook": tuple(c for c, _ in COOK_DIST),
    "verb": ("makes", "cooks", "prepares", "bakes", "serves", "buys"),
    "dish": HOT_DISHES + COLD_DISHES + BAKED_DISHES,
}
"""Content words by category. Function words ("on", "it", "is", "and",
"the", "when", ".") belong to none."""

DISH_KINDS: dict[str, tuple[str, ...]] = {"hot": HOT_DISHES, "cold": COLD_DISHES, "baked": BAKED_DISHES}
"""The finer split of the dishes, for analyses that want it."""

_CATEGORY_OF = {word: name for name, words in CATEGORIES.items() for word in words}

Dist = tuple  # tuple[tuple[str, float], ...]


# ---------------------------------------------------------------- rule functions

def dish_distribution(weather: str, cook: str, verb: str) -> Dist:
    """P(dish | weather, cook, verb) as (dish, probability) pairs (rule 4)."""
    if verb == "bakes":
        return BAKED_BY_WEATHER[weather]
    p_hot = HOT_PROBABILITY[weather]
    hot, cold = TASTE[cook]
    return tuple((d, p_hot * p) for d, p in hot) + tuple((d, (1.0 - p_hot) * p) for d, p in cold)


def render(template: str, day: str, weather: str, cook: str, verb: str, dish: str) -> list[str]:
    """The words of one sentence (rule 5)."""
    if template == "on-day":
        return ["on", day, "it", "is", weather, "and", "the", cook, verb, dish, END]
    if template == "when":
        return ["when", "it", "is", weather, "the", cook, verb, dish, END]
    if template == "cook-first":
        return ["the", cook, verb, dish, "on", day, END]
    raise ValueError(f"render: unknown template {template!r}")


def _draw(dist: Dist, u: float) -> str:
    """The outcome of ``dist`` at cumulative position ``u`` in [0, 1)."""
    total = 0.0
    for outcome, p in dist:
        total += p
        if u < total:
            return outcome
    return dist[-1][0]  # u within rounding of 1


def _sample_one(rng: random.Random) -> list[str]:
    # Every latent is drawn for every sentence, in a fixed order, even the
    # ones a template leaves unsaid: the draws per sentence stay constant.
    template = _draw(TEMPLATES, rng.random())
    day = _draw(DAY_DIST, rng.random())
    weather = _draw(WEATHER_DIST, rng.random())
    cook = _draw(COOK_DIST, rng.random())
    verb = _draw(VERB_BY_COOK[cook], rng.random())
    dish = _draw(dish_distribution(weather, cook, verb), rng.random())
    return render(template, day, weather, cook, verb, dish)


def sample_sentences(n: int, seed: int = 0) -> list[list[str]]:
    """``n`` independent sentences, the same ones for the same ``seed``."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"sample_sentences: n must be an int, got {type(n).__name__}")
    if n < 0:
        raise ValueError(f"sample_sentences: n must be >= 0, got {n}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"sample_sentences: seed must be an int, got {type(seed).__name__}")
    rng = random.Random(seed)
    return [_sample_one(rng) for _ in range(n)]


# ------------------------------------------------------------------ exact tables

class _Tables(NamedTuple):
    sentences: dict       # tuple of words -> probability
    next_words: dict      # prefix tuple -> {word: P(word | prefix)}, words by falling probability
    prefix_mass: dict     # prefix tuple -> P(a sentence starts with it)
    mean_length: float    # expected words per sentence, "." included


@functools.lru_cache(maxsize=1)
def _tables() -> _Tables:
    sentences: dict[tuple[str, ...], float] = {}
    for template, p_t in TEMPLATES:
        for day, p_d in DAY_DIST:
            for weather, p_w in WEATHER_DIST:
                for cook, p_c in COOK_DIST:
                    for verb, p_v in VERB_BY_COOK[cook]:
                        for dish, p_x in dish_distribution(weather, cook, verb):
                            p = p_t * p_d * p_w * p_c * p_v * p_x
                            if p > 0.0:
                                key = tuple(render(template, day, weather, cook, verb, dish))
                                sentences[key] = sentences.get(key, 0.0) + p

    joint: dict[tuple[str, ...], dict[str, float]] = {}
    for words, p in sentences.items():
        for i, word in enumerate(words):
            after = joint.setdefault(words[:i], {})
            after[word] = after.get(word, 0.0) + p
    next_words, prefix_mass = {}, {}
    for prefix, after in joint.items():
        mass = sum(after.values())
        prefix_mass[prefix] = mass
        ranked = sorted(after.items(), key=lambda item: (-item[1], item[0]))
        next_words[prefix] = {w: p / mass for w, p in ranked}
    mean_length = sum(p * len(words) for words, p in sentences.items())
    return _Tables(sentences, next_words, prefix_mass, mean_length)


def _as_words(words: Union[str, Sequence[str]], name: str) -> tuple[str, ...]:
    """A string is split at whitespace; a sequence must hold strings."""
    if isinstance(words, str):
        return tuple(words.split())
    if not isinstance(words, (Sequence, Iterable)):
        raise TypeError(f"{name} must be a sequence of words, got {type(words).__name__}")
    out = tuple(words)
    for w in out:
        if not isinstance(w, str):
            raise TypeError(f"{name} must hold words (str), found {type(w).__name__}: {w!r}")
    return out


def sentence_probabilities() -> dict[tuple[str, ...], float]:
    """Every sentence the grammar can produce, with its probability (sums to 1)."""
    return dict(_tables().sentences)


def num_sentences() -> int:
    """How many distinct sentences the grammar can produce."""
    return len(_tables().sentences)


def vocabulary() -> tuple[str, ...]:
    """Every word the grammar uses, sorted."""
    return tuple(sorted({w for words in _tables().sentences for w in words}))


def category_of(word: str) -> str | None:
    """The category of a content word ("day", "weather", ...), None for any other word."""
    return _CATEGORY_OF.get(word)


def accepts(words: Union[str, Sequence[str]]) -> bool:
    """Whether the grammar can produce exactly this sentence (final "." included)."""
    return _as_words(words, "accepts: words") in _tables().sentences


def next_word_distribution(prefix: Union[str, Sequence[str]] = ()) -> dict[str, float]:
    """The true P(next word | the words of the current sentence so far).

    ``prefix`` is the start of a sentence, without its "."; the empty prefix
    asks for the first word. Words come most probable first (ties
    alphabetically). Raises ValueError for a prefix no sentence begins with.
    """
    key = _as_words(prefix, "next_word_distribution: prefix")
    table = _tables().next_words.get(key)
    if table is None:
        raise ValueError(f"next_word_distribution: no sentence of the grammar starts with "
                         f"{' '.join(key)!r}")
    return dict(table)


def best_next_word(prefix: Union[str, Sequence[str]] = ()) -> str:
    """The Bayes-optimal guess: the most probable next word (ties: alphabetically first)."""
    key = _as_words(prefix, "best_next_word: prefix")
    table = _tables().next_words.get(key)
    if table is None:
        next_word_distribution(key)  # raises the ValueError that names the prefix
    return next(iter(table))


# -------------------------------------------------------------------- accuracies

def prediction_positions(sentence: Sequence[str]) -> list[tuple[tuple[str, ...], str]]:
    """(prefix, next word) for every position of a sentence, the first word included."""
    words = tuple(sentence)
    return [(words[:i], words[i]) for i in range(len(words))]


def optimal_accuracy(sentences: Iterable[Sequence[str]] | None = None) -> float:
    """The best next-word accuracy any model can reach.

    With no argument: the exact expectation over the grammar,
    ``E[sum over positions of max_w P(w | prefix)] / E[sentence length]``, the
    share of words the Bayes-optimal predictor gets right in a long stream
    of sentences. With ``sentences``: the Bayes predictor's expected
    accuracy on exactly those positions (mean of ``max_w P(w | prefix)``),
    the fair optimum to print beside a model's accuracy on the same test
    sentences. Every sentence must be one the grammar accepts.
    """
    if sentences is None:
        t = _tables()
        hits = sum(t.prefix_mass[prefix] * next(iter(after.values()))
                   for prefix, after in t.next_words.items())
        return hits / t.mean_length
    total, count = 0.0, 0
    for sentence in sentences:
        words = _as_words(sentence, "optimal_accuracy: sentence")
        if not accepts(words):
            raise ValueError(f"optimal_accuracy: the grammar cannot produce {' '.join(words)!r}")
        for prefix, _ in prediction_positions(words):
            total += next(iter(_tables().next_words[prefix].values()))
            count += 1
    if count == 0:
        raise ValueError("optimal_accuracy: sentences is empty")
    return total / count


def ngram_accuracy(n: int) -> float:
    """The best accuracy of a predictor that sees only the last ``n - 1`` words.

    ``n = 1``: no context, always the most frequent word (the unigram
    baseline); ``n = 2``: the previous word only. Near the start of a
    sentence the predictor also knows that the sentence starts (as a model
    reading a stream knows from the "." before it). Exact, like
    :func:`optimal_accuracy`, which is the limit of large ``n``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"ngram_accuracy: n must be an int >= 1, got {n!r}")
    t = _tables()
    joint: dict[tuple, dict[str, float]] = {}  # context -> next word -> expected count per sentence
    for prefix, after in t.next_words.items():
        context = prefix[len(prefix) - (n - 1):] if len(prefix) >= n - 1 else ("<s>",) + prefix
        bucket = joint.setdefault(context, {})
        for word, p in after.items():
            bucket[word] = bucket.get(word, 0.0) + t.prefix_mass[prefix] * p
    return sum(max(bucket.values()) for bucket in joint.values()) / t.mean_length


def unigram_accuracy() -> float:
    """The accuracy of always predicting the most frequent word (``ngram_accuracy(1)``)."""
    return ngram_accuracy(1)


Predictions = Union[Callable[[tuple], str], Sequence[str], Sequence[Sequence[str]]]


def model_accuracy(sentences: Iterable[Sequence[str]], predictions: Predictions) -> float:
    """The share of positions where a model's predicted word is the actual next word.

    ``predictions`` is one of
      * a callable ``predict(prefix: tuple[str, ...]) -> str`` asked at every
        position of every sentence (see :func:`prediction_positions`);
      * one sequence of predicted words per sentence, as long as the sentence
        (the i-th predicts word i from words 0..i-1);
      * one flat sequence of predicted words for all positions in order.
    Compare with ``optimal_accuracy(sentences)`` on the same sentences.
    """
    sentences = [_as_words(s, "model_accuracy: sentence") for s in sentences]
    targets = [w for s in sentences for w in s]
    if not targets:
        raise ValueError("model_accuracy: sentences is empty")
    if callable(predictions):
        guesses = [predictions(prefix) for s in sentences for prefix, _ in prediction_positions(s)]
    else:
        predictions = list(predictions)
        if predictions and all(isinstance(p, str) for p in predictions):
            guesses = predictions
        elif len(predictions) == len(sentences):
            guesses = []
            for i, (s, p) in enumerate(zip(sentences, predictions)):
                p = _as_words(p, "model_accuracy: predictions") if not isinstance(p, str) else (p,)
                if len(p) != len(s):
                    raise ValueError(f"model_accuracy: predictions[{i}] has {len(p)} words, "
                                     f"sentence {i} has {len(s)}")
                guesses.extend(p)
        else:
            raise ValueError(f"model_accuracy: predictions must be a callable, one word per "
                             f"position ({len(targets)}), or one list per sentence "
                             f"({len(sentences)}); got {len(predictions)} items")
    if len(guesses) != len(targets):
        raise ValueError(f"model_accuracy: {len(guesses)} predicted words for {len(targets)} positions")
    return sum(g == t for g, t in zip(guesses, targets)) / len(targets)


# ------------------------------------------------------------ generated streams

def split_sentences(words: Iterable[str], keep_incomplete: bool = False) -> list[list[str]]:
    """Cut a stream of words into sentences, each ending with its ".".

    Words after the last "." form an unfinished sentence, dropped unless
    ``keep_incomplete``.
    """
    sentences, current = [], []
    for word in words:
        current.append(word)
        if word == END:
            sentences.append(current)
            current = []
    if current and keep_incomplete:
        sentences.append(current)
    return sentences


class Acceptance(NamedTuple):
    accepted: int   # complete sentences the grammar can produce
    total: int      # complete sentences (ending with ".")
    share: float    # accepted / total, 0.0 when there is none


def acceptance(words: Union[str, Iterable[str]]) -> Acceptance:
    """How many complete sentences of a generated stream the grammar accepts.

    ``words`` is a stream of words (or a string, split at whitespace), e.g.
    a model's generated text; the unfinished tail after the last "." is not
    counted, since generation usually stops mid-sentence.
    """
    if isinstance(words, str):
        words = words.split()
    sentences = split_sentences(words)
    accepted = sum(accepts(s) for s in sentences)
    return Acceptance(accepted, len(sentences), accepted / len(sentences) if sentences else 0.0)


def summary() -> Mapping[str, object]:
    """The grammar's headline numbers (for reports and the examples)."""
    return {
        "distinct_sentences": num_sentences(),
        "vocabulary_size": len(vocabulary()),
        "mean_sentence_length": _tables().mean_length,
        "optimal_accuracy": optimal_accuracy(),
        "bigram_accuracy": ngram_accuracy(2),
        "unigram_accuracy": unigram_accuracy(),
    }
