"""Preference pairs with their images loaded, and the judge task built from them.

- `ShapesPairs`: ShapesVQA's correct-vs-wrong answer pairs (the embedded default).
- `SampledPairs`: a policy's own sampled answers, one the checker accepts against one it rejects
  (the pairs a grouped-comparison judge meets in policy RL).
- Files (the annotation app's export, RLAIF-V, HH-RLHF …) come through
  `rlhfv.data.formats.PreferenceData`; `AnsweredPairs` reads such a file whose rows also carry
  each response's short answer and a reference (the active loop's labelled pairs).
- `JudgeTask`: turns pairs into examples for training a pointwise generative judge (GRLHF-V
  §3.1): the prompt shows the image, the question and the two responses in a per-item random order;
  `label` is the 0-based shown position of the preferred response; `answer` is a short judgement in
  the output contract (criteria, analysis, `Scores: \\boxed{s1, s2}`) for cold-start SFT.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from rlhfv.data.shapes import ShapesVQA, answer_matches, mentioned
from rlhfv.grm.prompts import pointwise_prompt
from rlhfv.rollout import generate
from rlhfv.types import READING_SLOT, Example, PreferencePair, Prompt

HEDGES = ("I am not sure.", "I cannot tell from the image.", "It is hard to say.")
SUBJECT = re.compile(r"\bthe ((?:\w+ )?\w+?)(?: to the| in the| is|\?)")  # "the yellow circle" in a question


class ComparisonDrill:
    """The equality test at the heart of the "compare" analysis, drilled on a one-word prompt.

    Each item's target is one "compare" sentence, "Response 2 says 3, the image shows 4: wrong.",
    with the two values drawn at random (equal half the time) behind the prompt "Compare.".
    A tiny judge from random weights learned this test in ~600 steps behind a short prompt and
    not in 2000 behind the 255-token judge prompt; learned short, it carried over to the long
    prompt in 200-400 steps. So a judge curriculum starts here.

    Args:
        size: Number of items (each is a pure function of seed and index).
        values: The short answers to draw from (ShapesVQA's counts, colours and sides, and
            "nothing" for non-answers).
        verdict_only: The sentence up to the verdict is the prompt's prefill and the target is
            the verdict alone: for evaluation, where greedy decoding would otherwise choose the
            values too (and could make every test an easy one).
    """

    VALUES = ("1", "2", "3", "4", "red", "green", "blue", "yellow", "left", "right", "nothing")

    def __init__(
        self, size: int = 10_000, seed: int = 0, values: list[str] | None = None, verdict_only: bool = False
    ):
        self.size, self.seed, self.values = size, seed, list(values or self.VALUES)
        self.verdict_only = verdict_only
        if len(self.values) < 2:
            raise ValueError(f"ComparisonDrill needs at least two values, got {self.values!r}")

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> Example:
        if not 0 <= index < self.size:
            raise IndexError(index)
        rng = random.Random(self.seed * 1_000_033 + index)
        shown = rng.choice(self.values)
        said = shown if rng.random() < 0.5 else rng.choice([v for v in self.values if v != shown])
        verdict = "right" if said == shown else "wrong"
        head = f"Response {rng.randint(1, 2)} says {said}, the image shows {shown}:"
        if self.verdict_only:
            return Example(Prompt("Compare.", prefill=head), f" {verdict}.", label=verdict, task="drill")
        return Example(Prompt("Compare."), f"{head} {verdict}.", label=verdict, task="drill")

    @staticmethod
    def is_correct(text: str, example: Example) -> bool:
        """The text's verdict (the word after its last colon, or all of it) is the item's."""
        return text.rsplit(":", 1)[-1].strip().rstrip(".") == example.label


def replace_answer(sentence: str, answer: str, other: str) -> str:
    """`sentence` with its last mention of `answer` (a whole word) replaced by `other`."""
    hits = list(re.finditer(rf"\b{re.escape(answer)}\b", sentence, re.IGNORECASE))
    if not hits:
        return f"{other}."
    last = hits[-1]
    return sentence[: last.start()] + other + sentence[last.end() :]


class ShapesPairs:
    """ShapesVQA preference pairs (other arguments as for `ShapesVQA`).

    Args:
        non_answers: Share of pairs whose worse response answers nothing: it echoes the question's
            subject ("The yellow circle.") or hedges ("I am not sure."); its short answer is
            "nothing". A judge that never saw such responses scored them as right, and a policy
            trained on that judge learned to give them (the n-scaling run in results/grlhfv_shapes.md).
    """

    def __init__(
        self,
        size: int = 2000,
        split: str = "train",
        seed: int = 0,
        image_size: int = 96,
        max_shapes: int = 4,
        tasks: list[str] | None = None,
        non_answers: float = 0.0,
    ):
        if not 0.0 <= non_answers <= 1.0:
            raise ValueError(f"ShapesPairs.non_answers is a share of pairs in [0, 1], got {non_answers!r}")
        self.vqa = ShapesVQA(
            size=size, split=split, seed=seed, image_size=image_size, max_shapes=max_shapes, tasks=tasks
        )
        self.non_answers = non_answers

    def __len__(self) -> int:
        return len(self.vqa)

    def __getitem__(self, index: int) -> PreferencePair:
        pair = self.vqa.preference_pair(index)
        if not self.non_answers:
            return pair
        rng = random.Random(self.vqa.seed * 7_919 + index * 31 + 5)
        if rng.random() < self.non_answers:
            worse = 1 - pair.preferred
            subject = SUBJECT.search(pair.prompt.text)
            echo = f"The {subject.group(1)}." if subject else HEDGES[0]
            pair.responses[worse] = rng.choice([echo, echo, *HEDGES])
            pair.answers[worse] = "nothing"
        return pair


class SampledPairs:
    """Preference pairs of a policy's own answers: for each question whose sampled answers the
    checker splits, one accepted answer against one rejected, in random order.

    These are the responses a judge meets in grouped comparison ("There are is blue.", "There are
    1 shapes.", half-finished sentences), which templated pairs never show it. The answers are
    sampled once, when the data set is built (a progress bar shows it); items are then fixed.
    Questions whose answers all pass or all fail give no pair, so there are fewer pairs than
    questions.

    Args:
        policy: The model whose answers are paired (recipe node, e.g. `load_model`).
        data: The questions: a data set of `Example`s with `is_correct(text, example)` and a
            `label` (ShapesVQA).
        samples: Answers sampled per question.
        max_new_tokens, temperature: Sampling.
        seed: Seeds the sampling and each pair's choice and order.
        batch_size: Questions per `generate` call.
        device: Where the policy samples: "auto" (a GPU if there is one), "cpu" or "cuda".
    """

    def __init__(
        self,
        policy: object,
        data: object,
        samples: int = 5,
        max_new_tokens: int = 16,
        temperature: float = 0.8,
        seed: int = 0,
        batch_size: int = 50,
        device: str = "auto",
    ):
        from rlhfv.training.run import pick_device

        if samples < 2:
            raise ValueError(
                f"SampledPairs.samples must be at least 2 to find a right and a wrong answer, got {samples}"
            )
        check = getattr(data, "is_correct", None)
        if check is None:
            raise ValueError(
                f"SampledPairs needs data with is_correct(text, example); {type(data).__name__} has none"
            )
        where = pick_device(device)
        policy.module.to(where).eval()  # type: ignore[attr-defined]
        self.pairs: list[PreferencePair] = []
        size = len(data)  # type: ignore[arg-type]
        # sampled under this data set's own seed, leaving the run's random state as it was
        with torch.random.fork_rng(devices=[where] if where.type == "cuda" else []):
            torch.manual_seed(seed)
            for start in tqdm(range(0, size, batch_size), desc="sampling answers to pair", unit="batch"):
                examples = [data[i] for i in range(start, min(size, start + batch_size))]  # type: ignore[index]
                prompts = [e.prompt for e in examples]
                texts = generate(policy, prompts, samples, max_new_tokens, temperature).texts  # type: ignore[arg-type]
                for j, example in enumerate(examples):
                    rng = random.Random(seed * 1_000_003 + start + j)
                    answers = texts[j * samples : (j + 1) * samples]
                    pair = split_pair(answers, example, check, rng, f"sampled-{seed}-{start + j}")
                    if pair is not None:
                        self.pairs.append(pair)
        if not self.pairs:
            raise ValueError(
                f"SampledPairs: none of the {size} questions got both a right and a wrong answer "
                f"in {samples} samples"
            )

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> PreferencePair:
        return self.pairs[index]


class AnsweredPairs:
    """Pairs from an rlhfv preference JSONL file whose rows also give `answers` (each response's
    short answer, in the stored order) and `reference` (an answer to the question), so that
    `JudgeTask(analysis="compare")` can quote them. The active loop writes such rows: the answers
    of the pool question behind each task, and the labelled winner as the reference.

    Args:
        path: The JSONL file (`rlhfv.data.preference` rows plus `answers` and `reference`).
    """

    def __init__(self, path: str | Path):
        from rlhfv.data.formats import PreferenceData

        data = PreferenceData("jsonl", path)
        extra: dict[str, tuple[list[str], str]] = {}
        for line, text in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
            try:
                row = json.loads(text)
            except json.JSONDecodeError:
                continue  # PreferenceData skipped and reported it
            if not isinstance(row, dict):
                continue
            answers, reference = row.get("answers"), row.get("reference", "")
            if not (
                isinstance(answers, list) and len(answers) == 2 and all(isinstance(a, str) for a in answers)
            ):
                raise ValueError(
                    f"{path}:{line}: field 'answers' must list two short answers, got {answers!r:.80}"
                )
            if not isinstance(reference, str):
                raise ValueError(f"{path}:{line}: field 'reference' must be a string, got {reference!r:.80}")
            extra[str(row.get("id") or f"{Path(path).stem}-{line}")] = (answers, reference)
        self.pairs = data.pairs
        for pair in self.pairs:
            pair.answers, pair.reference = extra[pair.id]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> PreferencePair:
        return self.pairs[index]


def split_pair(
    answers: list[str],
    example: Example,
    check: Callable[[str, Example], bool],
    rng: random.Random,
    pair_id: str,
) -> PreferencePair | None:
    """One answer `check` accepts against one it rejects, in random order (None if it splits none)."""
    good = [t for t in answers if check(t, example)]
    bad = [t for t in answers if not check(t, example)]
    if not good or not bad:
        return None
    chosen = [rng.choice(good), rng.choice(bad)]
    said = [example.label, short_answer(chosen[1], example.label)]
    order = [0, 1] if rng.random() < 0.5 else [1, 0]
    return PreferencePair(
        prompt=example.prompt,
        responses=[chosen[i] for i in order],
        preferred=order.index(0),
        id=pair_id,
        source="sampled",
        reference=example.answer,
        answers=[said[i] for i in order],
    )


def short_answer(text: str, label: str) -> str:
    """What a response answers, in `label`'s kind ("3", "red" …): "nothing" when it names none,
    and all of them ("2 or 3") when it names several."""
    said = sorted(mentioned(text, label))
    return " or ".join(said) if said else "nothing"


class JudgeTask:
    """Examples that teach a pointwise judge to score two responses (see module docstring).

    Args:
        pairs: A data set of `PreferencePair`s (recipe node).
        seed: Seeds each item's response order; the order is fixed per item and seed.
        shuffle: Show the responses in random order (True) or as stored.
        principles: Optional annotation principles for the 'w/ principles' prompt variant.
        high / low: Scores of the preferred / other response in the SFT target.
        analysis: How the SFT target's analysis reaches its verdict.
            "verdict": it says what the image shows (the pair's reference answer, if any), then
            which response agrees ("Response 2 agrees with the image. Response 1 does not.").
            "compare": one sentence per response that quotes its short answer next to what the
            image shows, then the verdict ("Response 1 says 3, the image shows 4: wrong."); needs
            pairs that know each response's short answer (`PreferencePair.answers`, ShapesVQA).
            The two values to compare then stand a few tokens apart, which a small judge learns;
            with "verdict" our tiny judges stayed at chance (results/grlhfv_shapes.md).
        compact: Show the request and responses without the judge instructions
            (`pointwise_prompt(compact=True)`): a curriculum's first stage. A tiny judge learned the
            comparison within a few hundred steps on short prompts and not in thousands on the full
            255-token prompt; learned short, it carries over to the full prompt (results/grlhfv_shapes.md).
        ties: Share of items (for SFT) that show one of the two responses twice, with equal
            verdicts and scores in the target and `label` "tie" (`is_correct`: two equal scores).
            A grouped-comparison judge meets many pairs that say the same thing; trained on
            strict pairs only, a tiny judge split those by position (position bias 0.63-0.88).
            SFT data only: the RL rule needs a preferred response (`JudgeRuleReward` refuses ties).
        reading: Whether the prompt shows the judge's own answer to the question after the
            responses (`pointwise_prompt(reading=...)`; needs analysis "compare"). "none": no.
            "given": the pair's reference answer is shown (SFT: the judge learns to compare the
            responses with its answer). "self": the judge writes it first, before it sees the
            responses (`Prompt.reading`; evaluation and RL). The target's "the image shows X" is
            the answer shown, and its verdicts follow it.
        misread: With reading "given": share of items whose shown answer is the worse response's
            (a misreading); the target's verdicts follow the misreading, so the judge learns to
            take its verdict from its own answer and not from which response looks right.
        reading_items: Share of items that are the reading itself: the question alone, answered
            with the reference (`task` "reading"), so the judge keeps answering the question
            as well as it did before judge training.
    """

    def __init__(
        self,
        pairs: object,
        seed: int = 0,
        shuffle: bool = True,
        principles: str | None = None,
        high: int = 8,
        low: int = 3,
        analysis: str = "verdict",
        compact: bool = False,
        ties: float = 0.0,
        reading: str = "none",
        misread: float = 0.0,
        reading_items: float = 0.0,
    ):
        if analysis not in ("verdict", "compare"):
            raise ValueError(f"JudgeTask.analysis must be 'verdict' or 'compare', got {analysis!r}")
        for name, share in (("ties", ties), ("misread", misread), ("reading_items", reading_items)):
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"JudgeTask.{name} is a share of items in [0, 1], got {share!r}")
        if reading not in ("none", "given", "self"):
            raise ValueError(f"JudgeTask.reading must be 'none', 'given' or 'self', got {reading!r}")
        if reading != "none" and analysis != "compare":
            raise ValueError(
                f"JudgeTask(reading={reading!r}) needs analysis='compare' (the verdicts quote the answer)"
            )
        if misread and reading != "given":
            raise ValueError("JudgeTask.misread applies to reading='given' only")
        self.pairs, self.seed, self.shuffle, self.principles = pairs, seed, shuffle, principles
        self.high, self.low, self.analysis, self.compact, self.ties = high, low, analysis, compact, ties
        self.reading, self.misread, self.reading_items = reading, misread, reading_items

    def __len__(self) -> int:
        return len(self.pairs)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Example:
        pair: PreferencePair = self.pairs[index]  # type: ignore[index]
        rng = random.Random(self.seed * 1_000_003 + index)
        if self.reading_items and rng.random() < self.reading_items:
            if not pair.reference or len(pair.answers) != len(pair.responses):
                raise ValueError(
                    f"JudgeTask.reading_items needs pairs with a reference answer; pair {pair.id or index!r} has none"
                )
            truth = pair.answers[pair.preferred]
            return Example(prompt=pair.prompt, answer=pair.reference, label=truth, task="reading")
        swap = self.shuffle and rng.random() < 0.5
        order = [1, 0] if swap else [0, 1]  # stored index of each shown response
        tie = self.ties > 0 and rng.random() < self.ties
        if tie:
            order = [rng.randrange(2)] * 2
        compared = None
        shown_reading = READING_SLOT if self.reading == "self" else None  # "self": filled in by generate
        right = [i == pair.preferred for i in order]
        if self.analysis == "compare":
            if len(pair.answers) != len(pair.responses):
                raise ValueError(
                    f"JudgeTask(analysis='compare') needs each response's short answer; pair "
                    f"{pair.id or index!r} has answers={pair.answers!r} (ShapesPairs provides them)"
                )
            seen = pair.answers[pair.preferred]
            if self.reading == "given":
                shown_reading = pair.reference
                misread = pair.answers[1 - pair.preferred]
                if self.misread and rng.random() < self.misread and misread != "nothing":
                    shown_reading, seen = replace_answer(pair.reference, seen, misread), misread
                right = [pair.answers[i] == seen for i in order]
            compared = ([pair.answers[i] for i in order], seen)
        prompt = pointwise_prompt(
            pair.prompt.text,
            [pair.responses[i] for i in order],
            pair.prompt.images,
            self.principles,
            compact=self.compact,
            reading=shown_reading,
        )
        if self.reading == "self":
            prompt.reading = pair.prompt
        answer = self.target(right, pair.reference, compared)
        label = "tie" if right[0] == right[1] else str(right.index(True))
        return Example(prompt=prompt, answer=answer, label=label, task="judge")

    def target(
        self, right: int | list[bool], reference: str = "", compared: tuple[list[str], str] | None = None
    ) -> str:
        """A short judgement in the output contract: `right` says which shown responses are right
        (an int: the only right one), and the scores follow.

        With a reference answer the analysis first says what the image shows (the judge's own
        reading, which a VLM that answers the question can produce), then compares. With
        `compared` = (each shown response's short answer, the right short answer) it writes the
        "compare" analysis instead.
        """
        if isinstance(right, int):
            right = [i == right for i in range(2)]
        scores = [self.high if r else self.low for r in right]
        if compared is not None:
            said, truth = compared
            analysis = " ".join(
                f"Response {i + 1} says {s}, the image shows {truth}: {'right' if r else 'wrong'}."
                for i, (s, r) in enumerate(zip(said, right, strict=True))
            )
        else:
            seen = f"In the image: {reference.strip()} " if reference else ""
            if all(right) or not any(right):
                analysis = f"{seen}{'Both responses agree' if all(right) else 'Neither response agrees'} with the image."
            else:
                best = right.index(True)
                analysis = f"{seen}Response {best + 1} agrees with the image. Response {2 - best} does not."
        return (
            "Specific Criteria: the answer agrees with the image (80%); it is clear and direct (20%).\n"
            f"Analysis: {analysis}\n"
            f"Scores: \\boxed{{{scores[0]}, {scores[1]}}}"
        )

    @staticmethod
    def is_correct(text: str, example: Example) -> bool:
        """GRLHF-V's rule: the preferred response gets the strictly higher of exactly two scores
        (for a "tie" item: exactly two equal scores)."""
        from rlhfv.grm.rules import grlhfv_reward, parse_scores

        if example.task == "reading":
            return answer_matches(text, example.label)
        if example.label == "tie":
            parsed = parse_scores(text, 2)
            return parsed.ok and parsed.scores[0] == parsed.scores[1]

        return grlhfv_reward(text, int(example.label)) == 1.0
