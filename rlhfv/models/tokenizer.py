"""A small byte-level BPE tokenizer trained offline, for tiny test and demo models.

Nothing may be downloaded from a model hub, so tiny models get their tokenizer from here: a BPE
trained in a fraction of a second on a built-in English text about coloured shapes (the
ShapesVQA task), answers, judging words, and some general prose. Byte-level means any text still
encodes (rare words fall back to bytes); the small vocabulary keeps the embedding and LM head tiny.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black")
SHAPES = ("circle", "square", "triangle")
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
RELATIONS = ("left of", "right of", "above", "below")

GENERAL_TEXT = """\
system
user
assistant
You are a helpful assistant. Look at the image carefully and answer the question in a short sentence.
The user asks a question about the picture and the assistant gives a clear, correct answer.
Please think step by step, then give the final answer. The answer is correct. The answer is wrong.
Which response is better? Response 1 is more helpful than Response 2 because it is accurate.
Evaluate both responses against the principles, write a critique, then give each a score from 1 to 10.
The first response counts the shapes correctly, while the second one makes a mistake.
Final scores: \\boxed{7, 3}. The best response is Response 1. Both answers are equally good.
Yes. No. I am not sure. I cannot see the image. There is nothing in the picture.
In the morning the weather was warm, and people walked to the market to buy bread and fruit.
A model learns from data; training makes the loss fall and the reward rise over many steps.
Reward models judge answers, and the policy learns to give answers that the judges prefer.
The agent opened the door with the key, picked up the ball and reached the goal in time.
"""


def _corpus() -> list[str]:
    """Sentences covering the words and answer phrasings of the shapes task, the judge prompt and
    judgement of the generative reward model (so tiny GRMs see short sequences), plus general text."""
    from rlhfv.data.pairs import JudgeTask
    from rlhfv.data.shapes import FILLERS, TAILS
    from rlhfv.grm.prompts import pointwise_prompt

    lines = GENERAL_TEXT.splitlines()
    judge_prompt = pointwise_prompt(
        "How many shapes are in the image?", ["There are 2 shapes.", "It is red."], [object()]
    )
    lines += judge_prompt.text.splitlines() * 3
    lines += [JudgeTask(pairs=[]).target(best) for best in (0, 1)] * 3
    lines += [f"{f}the answer is 3.{t}" for f in FILLERS for t in TAILS]
    for n, word in enumerate(NUMBERS):
        lines += [
            f"How many shapes are in the image? There are {n} shapes. The answer is {n}.",
            f"I count {word} shapes in total, so the answer is {word}. Count: {n}",
        ]
    for colour in COLOURS:
        for shape in SHAPES:
            lines += [
                f"What colour is the {shape}? The {shape} is {colour}. It is {colour}.",
                f"Is there a {colour} {shape} in the picture? Yes, there is a {colour} {shape}.",
                f"How many {colour} {shape}s are there? There are 2 {colour} {shape}s.",
            ]
    for i, a in enumerate(SHAPES):
        for relation in RELATIONS:
            b = SHAPES[(i + 1) % len(SHAPES)]
            lines += [
                f"Is the red {a} to the left or right of the blue {b}? It is to the {relation.split()[0]}.",
                f"The green {a} is {relation} the yellow {b}. Answer: {relation.split()[0]}",
            ]
    return lines


_CACHE: dict[tuple[tuple[str, ...], int], str] = {}


def train_tiny_tokenizer(special_tokens: Sequence[str], vocab_size: int = 640) -> PreTrainedTokenizerFast:
    """Train (or fetch from the in-memory cache) a byte-level BPE tokenizer.

    Args:
        special_tokens: Tokens that must stay whole (chat markers, image placeholders, eos/pad).
            They get ids 0..len-1 in the given order.
        vocab_size: Total vocabulary including the 256 byte symbols and the special tokens.
    Returns:
        A fresh `PreTrainedTokenizerFast` (callers may set chat templates or token roles on it
        without touching the cached copy). Roles such as eos/pad are left for the caller to set.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = tuple(special_tokens)
    if len(set(special)) != len(special):
        raise ValueError(f"special_tokens has duplicates: {list(special)}")
    minimum = 256 + len(special) + 1
    if vocab_size < minimum:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: the 256 byte symbols and {len(special)} special "
            f"tokens alone need {minimum - 1}; use at least {minimum}"
        )
    key = (special, vocab_size)
    if key not in _CACHE:
        bpe = Tokenizer(models.BPE())
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(special),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodes: no unknowns
            show_progress=False,
        )
        bpe.train_from_iterator(_corpus(), trainer=trainer)
        _CACHE[key] = bpe.to_str()
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_CACHE[key]))
