"""Which candidate pairs to ask people about: active-learning strategies over a GRM's judgements.

Every strategy has one interface: the judgements of C candidate pairs (`rlhfv.grm.judge.judge`,
k samples each, scores mapped back to the original response order) and a seeded `random.Random`
in, one informativeness per candidate out (higher: ask a person sooner), or None where the
judgements cannot say (no sample parsed): such a candidate is skipped and counted by the caller,
never given a made-up score. `ranked` orders the candidates and `diverse` passes over near
duplicates of the ones already picked. The recipe names a strategy by dotted path
(`selection: rlhfv.grm.selection.uncertainty`).

For the verdict-based strategies the k samples should show the pair in both orders (the loop
alternates them: samples 0, 2, … show it as stored, 1, 3, … swapped).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from rlhfv.grm.voting import vote

if TYPE_CHECKING:
    from PIL import Image

    from rlhfv.grm.judge import Judgement

Strategy = Callable[[Sequence["Judgement"], random.Random], list[float | None]]


def verdict(scores: Sequence[float]) -> int:
    """Which response a sample prefers: 0 or 1 (original order), or -1 for equal scores."""
    return -1 if scores[0] == scores[1] else int(scores[1] > scores[0])


def at_random(judgements: Sequence[Judgement], rng: random.Random) -> list[float | None]:
    """The control: a uniform random draw per candidate, whatever the GRM said (but a candidate no
    sample parsed is still skipped, so every strategy draws from the same pool)."""
    return [rng.random() if any(s is not None for s in j.scores) else None for j in judgements]


def uncertainty(judgements: Sequence[Judgement], rng: random.Random) -> list[float | None]:
    """Disagreement among the k samples: 1 − the share of parsed samples whose verdict is the
    voted winner's (SPCT's voting@k, Eq. 14, picks the winner). 0: all samples agree; a tied vote
    gives 1.

    The k samples act as a committee: query-by-committee's vote disagreement (Seung, Opper &
    Sompolinsky 1992; Settles, "Active Learning Literature Survey", 2009, §3.2).
    """
    out: list[float | None] = []
    for j in judgements:
        parsed = [s for s in j.scores if s is not None]
        if not parsed:
            out.append(None)
            continue
        totals = vote(parsed, 2)  # [2]
        winner = verdict(totals)
        if winner == -1:
            out.append(1.0)
            continue
        agree = sum(verdict(s) == winner for s in parsed)
        out.append(1.0 - agree / len(parsed))
    return out


def position_inconsistency(judgements: Sequence[Judgement], rng: random.Random) -> list[float | None]:
    """How often the verdict flips when the order is swapped: over every pair of one sample that
    showed the responses as stored and one that showed them swapped, the share whose verdicts
    (in the original order) differ. None when the parsed samples do not cover both orders.

    Position bias of LLM judges, measured by swapping (Zheng et al., "Judging LLM-as-a-Judge with
    MT-Bench and Chatbot Arena", NeurIPS 2023, §3.3): an inconsistent judge does not know.
    """
    out: list[float | None] = []
    for j in judgements:
        as_stored = [
            verdict(s) for s, o in zip(j.scores, j.orders, strict=True) if s is not None and o[0] == 0
        ]
        swapped = [verdict(s) for s, o in zip(j.scores, j.orders, strict=True) if s is not None and o[0] == 1]
        if not as_stored or not swapped:
            out.append(None)
            continue
        flips = sum(a != b for a in as_stored for b in swapped)
        out.append(flips / (len(as_stored) * len(swapped)))
    return out


def margin(judgements: Sequence[Judgement], rng: random.Random) -> list[float | None]:
    """Minus the gap between the two responses' mean scores over the parsed samples: the smaller
    the gap, the higher the candidate (margin sampling, Scheffer, Decomain & Wrobel, "Active
    Hidden Markov Models for Information Extraction", IDA 2001)."""
    out: list[float | None] = []
    for j in judgements:
        parsed = [s for s in j.scores if s is not None]
        if not parsed:
            out.append(None)
            continue
        totals = vote(parsed, 2)  # [2]
        out.append(-abs(totals[0] - totals[1]) / len(parsed))
    return out


def ranked(informativeness: Sequence[float | None], rng: random.Random) -> list[int]:
    """Candidate indices, most informative first; equal values in random order; None left out."""
    keys = {i: (-v, rng.random()) for i, v in enumerate(informativeness) if v is not None}
    return sorted(keys, key=keys.__getitem__)


def image_hash(images: Sequence[Image.Image], size: int = 8) -> int:
    """An average hash over a pair's images: each image shrunk to size×size grey pixels, one bit per
    pixel (above the image's mean or not). Near-identical images differ in few bits (Krawetz,
    "Looks Like It", 2011)."""
    bits = 0
    for image in images:
        pixels = list(image.convert("L").resize((size, size)).tobytes())  # [size * size] grey levels
        mean = sum(pixels) / len(pixels)
        for p in pixels:
            bits = (bits << 1) | (p > mean)
    return bits


def word_overlap(a: str, b: str) -> float:
    """Jaccard similarity of two texts' lower-cased word sets (1: the same words)."""
    wa, wb = set(a.lower().split()), set(b.lower().split())
    return len(wa & wb) / max(1, len(wa | wb))


def diverse(
    order: Sequence[int],
    prompts: Sequence[str],
    image_hashes: Sequence[int],
    m: int,
    max_overlap: float = 0.8,
    max_bits: int = 4,
) -> list[int]:
    """Up to m candidates taken in `order`, passing over any whose prompt AND images are near
    duplicates of one already taken (word overlap ≥ `max_overlap` and image hashes within
    `max_bits` bits): one batch should not spend its labels on one question asked twice.

    Greedy diversity filtering of a ranked batch (Brinker, "Incorporating Diversity in Active
    Learning with Support Vector Machines", ICML 2003). Fewer than m come back when the rest
    are all near duplicates.
    """
    taken: list[int] = []
    for i in order:
        if len(taken) == m:
            break
        if any(
            word_overlap(prompts[i], prompts[t]) >= max_overlap
            and bin(image_hashes[i] ^ image_hashes[t]).count("1") <= max_bits
            for t in taken
        ):
            continue
        taken.append(i)
    return taken
