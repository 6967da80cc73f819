"""Inter-annotator agreement and accuracy on gold items.

Every judgment is broken into pairwise units: for a task with responses i < j an annotator's
label is 0 (i better), 1 (j better) or 2 (tie), so A/B/tie choices and full rankings over N
responses are scored the same way. Statistics are nominal over these three categories:

- Cohen's kappa for each pair of annotators, over the units both labelled (Cohen, 1960);
- Fleiss' kappa over units with two or more labels, using each unit's own number of raters
  (Fleiss, 1971);
- Krippendorff's alpha, which takes missing labels as they come (Krippendorff, 2011).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

Unit = tuple[int, int, int]  # (task id, i, j) with i < j
Ratings = dict[Hashable, dict[str, int]]  # unit -> {annotator: label}


def pair_labels(ranks: list[int]) -> dict[tuple[int, int], int]:
    """The pairwise labels implied by ranks (0 = best): {(i, j): 0 if i wins, 1 if j wins, 2 tie}."""
    return {
        (i, j): 2 if ranks[i] == ranks[j] else (0 if ranks[i] < ranks[j] else 1)
        for i, j in itertools.combinations(range(len(ranks)), 2)
    }


def units_from_labels(labels: Iterable[dict[str, Any]]) -> Ratings:
    """Turn label rows (`task_id`, `annotator`, `ranks`) into pairwise units."""
    units: Ratings = {}
    for row in labels:
        for (i, j), label in pair_labels(row["ranks"]).items():
            units.setdefault((row["task_id"], i, j), {})[row["annotator"]] = label
    return units


def cohen_kappa(a: list[int], b: list[int]) -> float:
    """Cohen's kappa of two raters' labels over the same units; NaN when chance agreement is 1."""
    if len(a) != len(b) or not a:
        raise ValueError(f"need two equally long, non-empty label lists, got {len(a)} and {len(b)}")
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    ca, cb = Counter(a), Counter(b)
    expected = sum(ca[c] * cb[c] for c in ca) / (n * n)
    return math.nan if expected == 1 else (observed - expected) / (1 - expected)


def fleiss_kappa(units: Iterable[list[int]]) -> float:
    """Fleiss' kappa over units, each given as the list of labels it received (units with < 2 skipped)."""
    per_unit: list[float] = []
    totals: Counter[int] = Counter()
    for labels in units:
        m = len(labels)
        if m < 2:
            continue
        counts = Counter(labels)
        per_unit.append((sum(c * c for c in counts.values()) - m) / (m * (m - 1)))
        totals.update(labels)
    if not per_unit:
        return math.nan
    observed = sum(per_unit) / len(per_unit)
    n = sum(totals.values())
    expected = sum((c / n) ** 2 for c in totals.values())
    return math.nan if expected == 1 else (observed - expected) / (1 - expected)


def krippendorff_alpha(units: Iterable[Sequence[Hashable]]) -> float:
    """Krippendorff's alpha (nominal) from the labels each unit received; units with < 2 are unpairable."""
    coincidence: dict[tuple[Hashable, Hashable], float] = {}  # o_ck
    for labels in units:
        m = len(labels)
        if m < 2:
            continue
        for x, y in itertools.permutations(range(m), 2):
            pair = (labels[x], labels[y])
            coincidence[pair] = coincidence.get(pair, 0.0) + 1 / (m - 1)
    marginals: dict[Hashable, float] = {}  # n_c
    for (c, _), o in coincidence.items():
        marginals[c] = marginals.get(c, 0.0) + o
    n = sum(marginals.values())
    disagree = sum(o for (c, k), o in coincidence.items() if c != k)
    expected = sum(marginals[c] * marginals[k] for c, k in itertools.permutations(marginals, 2))
    if n <= 1 or expected == 0:
        return math.nan
    return 1 - (n - 1) * disagree / expected


def agreement_report(units: Ratings) -> dict[str, Any]:
    """Cohen per annotator pair and each annotator's mean of it; Fleiss and Krippendorff over all units."""
    annotators = sorted({a for labels in units.values() for a in labels})
    pairs: list[dict[str, Any]] = []
    for a, b in itertools.combinations(annotators, 2):
        shared = [u for u, labels in units.items() if a in labels and b in labels]
        if shared:
            kappa = cohen_kappa([units[u][a] for u in shared], [units[u][b] for u in shared])
            same = sum(units[u][a] == units[u][b] for u in shared) / len(shared)  # raw, before chance
            pairs.append({"a": a, "b": b, "units": len(shared), "agreement": same, "cohen_kappa": kappa})
    per_annotator = []
    for a in annotators:
        kappas = [
            p["cohen_kappa"] for p in pairs if a in (p["a"], p["b"]) and not math.isnan(p["cohen_kappa"])
        ]
        mean = sum(kappas) / len(kappas) if kappas else math.nan
        per_annotator.append({"annotator": a, "partners": len(kappas), "mean_cohen_kappa": mean})
    lists = [list(labels.values()) for labels in units.values()]
    # raw agreement: the share of label pairs on a unit that agree (what κ corrects for chance)
    pairs_of_labels = [(x, y) for v in lists for x, y in itertools.combinations(v, 2)]
    raw = sum(x == y for x, y in pairs_of_labels) / len(pairs_of_labels) if pairs_of_labels else math.nan
    return {
        "units": sum(len(v) >= 2 for v in lists),
        "agreement": raw,
        "fleiss_kappa": fleiss_kappa(lists),
        "krippendorff_alpha": krippendorff_alpha(lists),
        "pairs": pairs,
        "annotators": per_annotator,
    }


def gold_accuracy(units: Ratings, gold: dict[int, list[int]]) -> list[dict[str, Any]]:
    """Each annotator's share of gold pairwise units labelled as the gold answer says."""
    truth = {(t, i, j): label for t, ranks in gold.items() for (i, j), label in pair_labels(ranks).items()}
    hits: dict[str, list[bool]] = {}
    for unit, labels in units.items():
        if unit in truth:
            for annotator, label in labels.items():
                hits.setdefault(annotator, []).append(label == truth[unit])
    return [
        {"annotator": a, "gold_units": len(h), "accuracy": sum(h) / len(h)} for a, h in sorted(hits.items())
    ]


def disputed_tasks(units: Ratings, gold: dict[int, list[int]]) -> list[int]:
    """Tasks whose annotators disagree on some pair and that have no gold answer yet: the ones
    still waiting for an admin (an adjudicated task's answer is settled, whatever the votes)."""
    return sorted({unit[0] for unit, votes in units.items() if len(set(votes.values())) > 1} - set(gold))


def annotator_disagreements(units: Ratings, annotator: str) -> list[dict[str, Any]]:
    """The units where `annotator` gave none of the others' most common labels, with what each
    person said: the drill-down behind a low kappa. Units nobody else labelled are left out."""
    rows = []
    for (task_id, i, j), votes in sorted(units.items()):
        others = Counter(label for name, label in votes.items() if name != annotator)
        if annotator not in votes or not others:
            continue
        top = max(others.values())
        if others[votes[annotator]] == top:
            continue  # agrees with (one of) the most common labels
        said = {name: "tie" if label == 2 else f"response {i if label == 0 else j} better"
                for name, label in votes.items()}  # fmt: skip
        rows.append({"task_id": task_id, "pair": f"{i} vs {j}", "own": said.pop(annotator),
                     "others": "; ".join(f"{name}: {text}" for name, text in sorted(said.items()))})  # fmt: skip
    return rows
