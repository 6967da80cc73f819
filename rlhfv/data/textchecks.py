"""TextChecks: short text questions whose answers a rule can check, and preference pairs built from them.

The text side's ShapesVQA: a task on which a small pretrained LM answers right sometimes and wrong
sometimes, so a judge of its answers has something to learn, and a checker says who is right.
Every item is a pure function of (seed, split, index). The split is decided by the question
itself (a CRC32 of its text), so train and test never share a question, whatever the seeds.

Kinds, each with the canonical short label the checker compares against:

- add:          "What is 23 + 8? Answer in one sentence."                 label "31"
- sub:          "What is 15 - 7? ..."                                     label "8"
- compare:      "Which number is larger, 47 or 74? ..."                   label "74"
- count_words:  'How many words are in the sentence "the dog ran home"?'  label "4"
- count_letters:'How many letters are in the word "garden"?'              label "6"
- caps:         'Rewrite this sentence in capital letters: "the cat sat."' label the sentence upper-cased
- three_words:  "Describe the sea in exactly three words."                label "3" (a word count)

Preference pairs put a right answer against a wrong one said in the *same* template ("23 + 8 =
31." against "23 + 8 = 41."), so length and phrasing carry no cue: a judge has to check the
answer (recompute 23 + 8, count the words, look at the letters' case). Wrong numbers are the
slips a model makes: a carry off by ten, a count off by one, the other number of the two.
"""

from __future__ import annotations

import random
import re
import zlib

from rlhfv.types import Example, PreferencePair, Prompt

KINDS = ("add", "sub", "compare", "count_words", "count_letters", "caps", "three_words")
SPLITS = ("train", "test")
ONE_SENTENCE = " Answer in one sentence."  # a small model then says its answer before it rambles
TEST_SHARE = 5  # one question in TEST_SHARE is a test question (by CRC32 of its text)

WORDS = (
    "the dog ran home fast",
    "a small bird sat on the old fence",
    "my sister likes green tea",
    "we walked to the park after lunch",
    "the train was late again",
    "he painted the door blue",
    "rain fell all night long",
    "she read a book by the window",
    "the children played in the snow",
    "our cat sleeps on the warm rug",
    "the baker sold fresh bread",
    "they found a coin in the sand",
    "the wind shook the tall trees",
    "i forgot my keys at work",
    "the river runs past the mill",
    "a red kite flew over the hill",
)
VOCAB = sorted({w for s in WORDS for w in s.split()} | {
    "apple", "yellow", "quiet", "garden", "window", "pencil", "mountain", "orange", "silver", "planet",
    "butter", "candle", "rabbit", "forest", "bridge", "winter", "market", "doctor", "kitchen", "music",
})  # fmt: skip
THINGS = ("the sea", "a forest", "winter", "a city at night", "your morning", "a cat", "the desert",
          "a storm", "summer", "a library", "the moon", "a market")  # fmt: skip
ADJECTIVES = ("calm", "deep", "blue", "cold", "quiet", "dark", "bright", "busy", "warm", "soft", "wild",
              "green", "vast", "still", "loud", "old", "fresh", "gentle", "grey", "open")  # fmt: skip
NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
}  # fmt: skip


def _sentence(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(rng.randint(low, high)))


def _off_by(rng: random.Random, value: int, steps: tuple[int, ...]) -> int:
    """A plausible slip: `value` moved by one of `steps`, kept positive."""
    options = [value + s for s in steps if value + s > 0] + [value - s for s in steps if value - s > 0]
    return rng.choice(options)


def _make(rng: random.Random, kind: str) -> tuple[str, str, str, str]:
    """(question, label, right response, wrong response) of one kind; both responses share a template."""
    if kind in ("add", "sub"):
        # one-digit operands, or a two-digit and a one-digit: SmolLM2-135M gets the first mostly
        # right and the second mostly wrong (results/textgrm_textchecks.md)
        a, b = rng.randint(2, 9) if rng.random() < 0.5 else rng.randint(10, 49), rng.randint(2, 9)
        if kind == "sub":
            a, b = a + b, b  # a non-negative difference
        op, value = ("+", a + b) if kind == "add" else ("-", a - b)
        wrong = _off_by(rng, value, (1, 2, 10))
        template = rng.choice(["{a} {op} {b} = {x}.", "The answer is {x}.", "{a} {op} {b} is {x}."])
        say = lambda x: template.format(a=a, op=op, b=b, x=x)  # noqa: E731
        return f"What is {a} {op} {b}?{ONE_SENTENCE}", str(value), say(value), say(wrong)
    if kind == "compare":
        a = rng.randint(10, 99)
        b = int(str(a)[::-1]) if a % 10 and a % 11 else _off_by(rng, a, (1, 2, 3, 10))
        big, small = max(a, b), min(a, b)
        template = rng.choice(["{x} is larger.", "The larger number is {x}.", "{x} is the larger one."])
        return (
            f"Which number is larger, {a} or {b}?{ONE_SENTENCE}",
            str(big),
            template.format(x=big),
            template.format(x=small),
        )
    if kind == "count_words":
        sentence = rng.choice(WORDS) if rng.random() < 0.5 else _sentence(rng, 3, 8)
        n = len(sentence.split())
        wrong = _off_by(rng, n, (1,))
        template = rng.choice(["The sentence has {x} words.", "There are {x} words.", "{x} words."])
        question = f'How many words are in the sentence "{sentence}"?{ONE_SENTENCE}'
        return question, str(n), template.format(x=n), template.format(x=wrong)
    if kind == "count_letters":
        word = rng.choice([w for w in VOCAB if len(w) <= 6])
        wrong = _off_by(rng, len(word), (1,))
        template = rng.choice(['The word "{w}" has {x} letters.', "It has {x} letters.", "{x} letters."])
        question = f'How many letters are in the word "{word}"?{ONE_SENTENCE}'
        return (
            question,
            str(len(word)),
            template.format(w=word, x=len(word)),
            template.format(w=word, x=wrong),
        )
    if kind == "caps":
        sentence = _sentence(rng, 3, 6) + "."
        right = sentence.upper()
        # the wrong rewrite keeps the words and the length; only the case is not what was asked
        wrong = rng.choice([sentence.capitalize(), sentence.title(), sentence])
        return f'Rewrite this sentence in capital letters: "{sentence}"', right, right, wrong
    if kind == "three_words":
        thing = rng.choice(THINGS)
        words = rng.sample(ADJECTIVES, 4)
        right = ", ".join(words[:3]).capitalize() + "."
        # two or four words: shorter or longer at random, so length says nothing on average
        wrong_words = words[:2] if rng.random() < 0.5 else words
        wrong = ", ".join(wrong_words).capitalize() + "."
        return f"Describe {thing} in exactly three words.", "3", right, wrong
    raise ValueError(f"unknown TextChecks kind {kind!r}; choose from {KINDS}")


def split_of(question: str) -> str:
    """The split a question belongs to, a function of its text alone."""
    return "test" if zlib.crc32(question.encode()) % TEST_SHARE == 0 else "train"


def numbers_in(text: str) -> list[int]:
    """The whole numbers a text says, digits or number words, in order."""
    found = re.findall(r"\d+|[a-z]+", text.lower())
    return [int(w) if w.isdigit() else NUMBER_WORDS[w] for w in found if w.isdigit() or w in NUMBER_WORDS]


def check(text: str, kind: str, question: str, label: str) -> bool:
    """Whether a free-form answer to `question` (of `kind`) is right.

    Numbers: the last number said is the label (a worked "23 + 48 = 71" ends on its result);
    compare: the larger number is said before the smaller (or alone); caps: the sentence's words
    appear in order, every letter upper-case; three_words: exactly three words.
    """
    text = text.strip()
    if kind in ("add", "sub", "count_words", "count_letters"):
        said = numbers_in(text)
        return bool(said) and said[-1] == int(label)
    if kind == "compare":
        a, b = (int(x) for x in re.findall(r"\d+", question))
        said = [x for x in numbers_in(text) if x in (a, b)]
        return bool(said) and said[0] == int(label)
    if kind == "caps":
        letters = re.sub(r"[^A-Za-z ]", "", text).split()
        return letters == re.sub(r"[^A-Za-z ]", "", label).split()
    if kind == "three_words":
        return len(re.findall(r"[A-Za-z]+(?:'[a-z]+)?", text)) == 3
    raise ValueError(f"unknown TextChecks kind {kind!r}; choose from {KINDS}")


class TextChecks:
    """A deterministic, indexable data set of checkable text questions (`Example`s).

    Args:
        size: Number of items.
        split: "train" or "test": disjoint questions (`split_of`).
        seed: Data seed; different seeds give different items.
        kinds: Question kinds to draw from, in turn (item i is of kind kinds[i % len(kinds)]).
    """

    def __init__(self, size: int = 2000, split: str = "train", seed: int = 0, kinds: list[str] | None = None):
        if split not in SPLITS:
            raise ValueError(f"TextChecks split must be 'train' or 'test', got {split!r}")
        self.kinds = list(kinds or KINDS)
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown or not self.kinds:
            raise ValueError(f"TextChecks kinds {unknown or self.kinds} unknown; choose from {KINDS}")
        self.size, self.split, self.seed = size, split, seed

    def __len__(self) -> int:
        return self.size

    def item(self, index: int) -> tuple[str, str, str, str, str, random.Random]:
        """(kind, question, label, right response, wrong response, the item's rng)."""
        if not 0 <= index < self.size:
            raise IndexError(index)
        rng = random.Random(f"textchecks/{self.seed}/{self.split}/{index}")
        kind = self.kinds[index % len(self.kinds)]
        while True:  # draw until the question falls in this split
            made = _make(rng, kind)
            if split_of(made[0]) == self.split:
                return (kind, *made, rng)

    def __getitem__(self, index: int) -> Example:
        kind, question, label, right, _, _ = self.item(index)
        return Example(prompt=Prompt(question), answer=right, label=label, task=kind)

    @staticmethod
    def is_correct(text: str, example: Example) -> bool:
        """The checker (`check`) for a policy's answer to an example."""
        return check(text, example.task, example.prompt.text, example.label)

    def preference_pair(self, index: int) -> PreferencePair:
        """The right response against the wrong one, in random order."""
        kind, question, label, right, wrong, rng = self.item(index)
        first_is_right = rng.random() < 0.5
        return PreferencePair(
            prompt=Prompt(question),
            responses=[right, wrong] if first_is_right else [wrong, right],
            preferred=0 if first_is_right else 1,
            id=f"textchecks-{self.split}-{self.seed}-{index}",
            source=f"textchecks/{kind}",
            reference=right,
        )


class TextCheckPairs:
    """TextChecks preference pairs as a data set (a `pairs` node of every GRM pipeline).

    Arguments as for `TextChecks`.
    """

    def __init__(self, size: int = 2000, split: str = "train", seed: int = 0, kinds: list[str] | None = None):
        self.checks = TextChecks(size, split, seed, kinds)

    def __len__(self) -> int:
        return len(self.checks)

    def __getitem__(self, index: int) -> PreferencePair:
        return self.checks.preference_pair(index)
