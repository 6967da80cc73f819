"""ShapesVQA: the embedded default task. Images of coloured shapes with checkable questions.

Every example is a pure function of (seed, split, index): the same call gives the same image,
question and answer on any machine, and the train and test splits never share a generator seed.
Three question families, each with a canonical short label that a rule can check:

- count:    "How many shapes are in the image?"                    label "3"
- colour:   "What colour is the triangle?"                          label "red"
- position: "Is the red circle to the left or right of the blue square?"   label "left"

Chance accuracy is 1/4 (count, 1-4 shapes), 1/4 (colour) and 1/2 (position).
Preference pairs put a correct answer against a plausible wrong one, both phrased like model
answers; extra words are added to either side at random so length does not reveal the winner.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from PIL import Image, ImageDraw

from rlhfv.types import Example, PreferencePair, Prompt

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (230, 200, 30)}
SHAPES = ("circle", "square", "triangle")
TASKS = ("count", "colour", "position")
NUMBER_WORDS = {"one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6"}
SPLIT_OFFSET = {"train": 0, "test": 1_000_003}


@dataclass
class Shape:
    kind: str
    colour: str
    x: int  # centre, pixels
    y: int
    r: int  # half size, pixels


def _place_shapes(rng: random.Random, count: int, size: int, r: int) -> list[Shape]:
    """`count` shapes of half-size r in distinct cells of a 3×3 grid, jittered inside their cell,
    with distinct (kind, colour) pairs. The grid guarantees every count fits."""
    cell = size // 3
    r = min(r, cell // 2 - 1)
    slack = cell // 2 - r - 1
    combos = [(k, c) for k in SHAPES for c in COLOURS]
    rng.shuffle(combos)
    shapes = []
    for (kind, colour), spot in zip(combos, rng.sample(range(9), count), strict=False):
        row, col = divmod(spot, 3)
        x = col * cell + cell // 2 + rng.randint(-slack, slack)
        y = row * cell + cell // 2 + rng.randint(-slack, slack)
        shapes.append(Shape(kind, colour, x, y, r))
    return shapes


def draw(shapes: list[Shape], size: int) -> Image.Image:
    image = Image.new("RGB", (size, size), (255, 255, 255))
    pen = ImageDraw.Draw(image)
    for s in shapes:
        box = (s.x - s.r, s.y - s.r, s.x + s.r, s.y + s.r)
        fill = COLOURS[s.colour]
        if s.kind == "circle":
            pen.ellipse(box, fill=fill)
        elif s.kind == "square":
            pen.rectangle(box, fill=fill)
        else:
            pen.polygon([(s.x, s.y - s.r), (s.x - s.r, s.y + s.r), (s.x + s.r, s.y + s.r)], fill=fill)
    return image


def _question(rng: random.Random, task: str, shapes: list[Shape]) -> tuple[str, str, str, str] | None:
    """(question, label, answer sentence, wrong label) or None if the layout cannot ask it."""
    if task == "count":
        n = len(shapes)
        wrong = rng.choice([k for k in range(1, 5) if k != n])
        return "How many shapes are in the image?", str(n), f"There are {n} shapes.", str(wrong)
    if task == "colour":
        kinds = [s.kind for s in shapes]
        unique = [s for s in shapes if kinds.count(s.kind) == 1]
        if not unique:
            return None
        s = rng.choice(unique)
        wrong = rng.choice([c for c in COLOURS if c != s.colour])
        return f"What colour is the {s.kind}?", s.colour, f"The {s.kind} is {s.colour}.", wrong
    pairs = [(a, b) for a in shapes for b in shapes if a is not b and abs(a.x - b.x) > a.r]
    if not pairs:
        return None
    a, b = rng.choice(pairs)
    side = "left" if a.x < b.x else "right"
    q = f"Is the {a.colour} {a.kind} to the left or right of the {b.colour} {b.kind}?"
    answer = f"The {a.colour} {a.kind} is to the {side} of the {b.colour} {b.kind}."
    return q, side, answer, "right" if side == "left" else "left"


class ShapesVQA:
    """A deterministic, indexable data set of `Example`s.

    Args:
        size: Number of examples.
        split: "train" or "test" (disjoint generator seeds).
        seed: Data seed; different seeds give different data sets.
        image_size: Side of the square RGB images, pixels.
        tasks: Question families to draw from (any of count, colour, position).
        max_shapes: Most shapes in one image (1..6).
        shape_size: Side of a shape as a fraction of the image side. Tiny VLMs trained from scratch
            learn colours within a few hundred steps at 0.4 and not at all at 0.2 (a shape then
            covers a sliver of one vision patch), so the default is generous. At most 1/3 (the
            shapes sit in a 3×3 grid).
    """

    def __init__(
        self,
        size: int = 2000,
        split: str = "train",
        seed: int = 0,
        image_size: int = 96,
        tasks: list[str] | None = None,
        max_shapes: int = 4,
        shape_size: float = 0.3,
    ):
        if split not in SPLIT_OFFSET:
            raise ValueError(f"ShapesVQA split must be 'train' or 'test', got {split!r}")
        tasks = list(tasks or TASKS)
        unknown = [t for t in tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"ShapesVQA tasks {unknown} unknown; choose from {TASKS}")
        if not 1 <= max_shapes <= 6:
            raise ValueError(f"ShapesVQA max_shapes must be in 1..6, got {max_shapes}")
        self.size, self.split, self.seed = size, split, seed
        if not 0.05 <= shape_size <= 1 / 3:
            raise ValueError(f"ShapesVQA shape_size must be in [0.05, 1/3], got {shape_size}")
        self.image_size, self.tasks, self.max_shapes = image_size, tasks, max_shapes
        self.radius = max(3, round(image_size * shape_size / 2))

    def __len__(self) -> int:
        return self.size

    def _draw_item(self, index: int) -> tuple[Image.Image, str, str, str, str, str, random.Random]:
        if not 0 <= index < self.size:
            raise IndexError(index)
        rng = random.Random(self.seed * 7_919_993 + SPLIT_OFFSET[self.split] + index)
        task = self.tasks[index % len(self.tasks)]
        while True:  # a question the layout cannot ask (no unique shape kind …) draws a new layout
            shapes = _place_shapes(rng, rng.randint(1, self.max_shapes), self.image_size, self.radius)
            made = _question(rng, task, shapes)
            if made is not None:
                break
        question, label, answer, wrong = made
        return draw(shapes, self.image_size), question, label, answer, wrong, task, rng

    def __getitem__(self, index: int) -> Example:
        image, question, label, answer, _, task, _ = self._draw_item(index)
        return Example(prompt=Prompt(text=question, images=[image]), answer=answer, label=label, task=task)

    @staticmethod
    def is_correct(text: str, example: Example) -> bool:
        """The evaluation rule: the answer names the label and nothing competing."""
        return answer_matches(text, example.label)

    def preference_pair(self, index: int) -> PreferencePair:
        """A correct answer against a plausible wrong one, in random order."""
        image, question, label, answer, wrong, task, rng = self._draw_item(index)
        good, bad = phrase(rng, task, label, question), phrase(rng, task, wrong, question)
        first_is_good = rng.random() < 0.5
        responses = [good, bad] if first_is_good else [bad, good]
        return PreferencePair(
            answers=[label, wrong] if first_is_good else [wrong, label],
            prompt=Prompt(text=question, images=[image]),
            responses=responses,
            preferred=0 if first_is_good else 1,
            id=f"shapes-{self.split}-{self.seed}-{index}",
            source="shapes",
            reference=answer,
        )


class ShapesScenes:
    """Whole-scene descriptions of ShapesVQA-style images: the captions that teach a fresh projector
    what a vision tower sees (LLaVA's first stage), before any question is asked.

    "There are 3 shapes. From left to right: a red circle at the top, a blue square in the middle,
    a green triangle at the bottom." names the count, every shape's colour and kind, their
    left-to-right order and their rows: everything ShapesVQA's questions ask about.

    Args: as ShapesVQA's (size, split, seed, image_size, max_shapes, shape_size).
    """

    ROWS = ("at the top", "in the middle", "at the bottom")

    def __init__(
        self,
        size: int = 2000,
        split: str = "train",
        seed: int = 0,
        image_size: int = 96,
        max_shapes: int = 4,
        shape_size: float = 0.3,
    ):
        self.questions = ShapesVQA(size, split, seed, image_size, None, max_shapes, shape_size)

    def __len__(self) -> int:
        return len(self.questions)

    def __getitem__(self, index: int) -> Example:
        q = self.questions
        if not 0 <= index < q.size:
            raise IndexError(index)
        rng = random.Random(q.seed * 7_919_993 + SPLIT_OFFSET[q.split] + index + 500_009)
        shapes = _place_shapes(rng, rng.randint(1, q.max_shapes), q.image_size, q.radius)
        cell = q.image_size // 3
        parts = [
            f"a {s.colour} {s.kind} {self.ROWS[min(2, s.y // cell)]}"
            for s in sorted(shapes, key=lambda s: s.x)
        ]
        n = len(shapes)
        text = (
            f"There is 1 shape: {parts[0]}."
            if n == 1
            else f"There are {n} shapes. From left to right: {', '.join(parts[:-1])} and {parts[-1]}."
        )
        image = draw(shapes, q.image_size)
        return Example(
            prompt=Prompt(text="Describe the image.", images=[image]),
            answer=text,
            label=text,
            task="describe",
        )

    @staticmethod
    def is_correct(text: str, example: Example) -> bool:
        return " ".join(text.split()) == example.label


FILLERS = ("Looking at the image, ", "From what I can see, ", "Based on the picture, ", "")
TAILS = ("", " I am fairly sure about this.", " That is my answer.", "")


def phrase(rng: random.Random, task: str, label: str, question: str) -> str:
    """Say `label` the way a model might, with optional extra words."""
    if task == "count":
        core = rng.choice(
            [f"There are {label} shapes.", f"I count {label} shapes in the image.", f"{label}."]
        )
    elif task == "colour":
        kind = question.rsplit(" ", 1)[-1].rstrip("?")
        core = rng.choice([f"The {kind} is {label}.", f"It is {label}.", f"{label.capitalize()}."])
    else:
        subject = question.split(" to the ")[0].removeprefix("Is the ")
        core = rng.choice(
            [f"The {subject} is on the {label}.", f"It is to the {label}.", f"{label.capitalize()}."]
        )
    filler = rng.choice(FILLERS)
    if filler:
        core = core[0].lower() + core[1:]
    return filler + core + rng.choice(TAILS)


def mentioned(text: str, label: str) -> set[str]:
    """The answers of `label`'s kind that a text mentions (digits and number words count alike)."""
    words = re.findall(r"[a-z]+|\d+", text.lower())
    if label.isdigit():
        return {NUMBER_WORDS.get(w, w) for w in words if w.isdigit() or w in NUMBER_WORDS}
    vocabulary = set(COLOURS) if label in COLOURS else {"left", "right"}
    return {w for w in words if w in vocabulary}


def answer_matches(text: str, label: str) -> bool:
    """True iff the text names the label and no competing answer of the same kind."""
    return mentioned(text, label) == {label}
