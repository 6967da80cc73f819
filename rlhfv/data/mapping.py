"""The `generic` preference format: any JSON / JSONL file, read through a field mapping.

A mapping names, for each thing a preference needs, the row field that holds it (dots reach into
nested objects, `q.text`). It is written on the command line as `key=field,key=field`, in a YAML
file of the same keys, or as a dict in a recipe's data node:

    prompt=instruction,a=response1,b=response2,label=annotator1+annotator2+annotator3

Keys (`KEYS`):
- `prompt`: the question. Several fields joined by `+` (a list in YAML) are one prompt, their
  texts joined by a blank line (`JOIN`) in the order given: `prompt=instruction+input` keeps an
  instruction together with the text it is about. A part that is missing or empty is left out;
  the prompt needs at least one.
- `a`, `b`: the two responses, with `label` saying which is better; or `chosen`, `rejected`: the
  better one and the worse one, with no label. A response is kept as the text it is: an empty
  string stays empty (annotators judged it), and a number, `true` or an object is its JSON text;
  `load_generic` counts such responses. Only a missing response (`null`, no field) skips the row.
  `+` joins fields here too.
- `label`: the field naming the better response: 1 / 2, A / B, model_a / model_b, or the text of
  a response; 0 / tie means neither. Several fields joined by `+` (a list in YAML) are annotator
  votes, combined by `vote`; a missing, empty or NaN vote abstains.
- `vote`: `majority` (default: a side needs more than half of the votes cast, tie votes included,
  else the pair ties), `plurality` (more votes than the other side; tie votes abstain) or
  `unanimous` (every vote cast names the same side, else the pair ties).
- `images` (a path or a list of paths inside the file's folder), `subset`, `id`: optional.

A tie is kept as a tie (`preferred = None`), never as "the first one won"; judges are not scored
on ties and preference training skips them.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
from collections import Counter
from pathlib import Path
from typing import Any

from rlhfv.data.preference import PairwisePreference, RowError, RowProblem, load_rows, read_rows

logger = logging.getLogger(__name__)

KEYS = ("prompt", "a", "b", "chosen", "rejected", "label", "vote", "images", "subset", "id")
TEXT_KEYS = ("prompt", "a", "b", "chosen", "rejected", "label")  # may join fields with +
JOIN = "\n\n"  # between the fields of one text (prompt=instruction+input)
VOTE_RULES = ("majority", "plurality", "unanimous")
SIDES = {  # a label value, lower-cased, → the side it names
    **dict.fromkeys(("1", "a", "model_a", "response_a"), "a"),
    **dict.fromkeys(("2", "b", "model_b", "response_b"), "b"),
    **dict.fromkeys(("0", "tie", "tie (bothbad)", "equal"), "tie"),
}


def unknown_key_message(
    key: str, known: tuple[str, ...], what: str, aliases: dict[str, str] | None = None
) -> str:
    """'unknown key …; did you mean …?' with the closest known key (or an alias's target)."""
    guess = (aliases or {}).get(key) or next(iter(difflib.get_close_matches(key, known, n=1)), None)
    hint = f"; did you mean {guess!r}?" if guess else ""
    return f"unknown {what} key {key!r}{hint} (known: {', '.join(known)})"


def parse_mapping(spec: str | dict[str, Any]) -> dict[str, Any]:
    """A mapping from `key=field,…`, a YAML file's path or a dict; checked, `label` made a list.

    Raises:
        ValueError: an unknown key, a missing or conflicting response pair, or a bad `vote`.
    """
    if isinstance(spec, str) and "=" not in spec:
        import yaml

        path = Path(spec)
        if not path.is_file():
            raise ValueError(f"mapping {spec!r} is neither key=field pairs nor an existing YAML file")
        spec = yaml.safe_load(path.read_text()) or {}
        if not isinstance(spec, dict):
            raise ValueError(f"{path}: a mapping file holds key: field pairs, got {type(spec).__name__}")
    if isinstance(spec, str):
        pairs = [p.partition("=") for p in spec.split(",") if p.strip()]
        bad = [k for k, eq, v in pairs if not eq or not v.strip()]
        if bad:
            raise ValueError(f"mapping {spec!r}: each part must be key=field, got {bad[0]!r}")
        spec = {k.strip(): v.strip() for k, _, v in pairs}
    mapping = dict(spec)
    for key in mapping:
        if key not in KEYS:
            raise ValueError(f"mapping: {unknown_key_message(key, KEYS, 'mapping')}")
    for key in TEXT_KEYS:  # "instruction+input" → ["instruction", "input"]; one field stays a string
        if isinstance(mapping.get(key), str):
            fields = [f.strip() for f in mapping[key].split("+") if f.strip()]
            mapping[key] = fields[0] if len(fields) == 1 and key != "label" else fields
        value = mapping.get(key, "x")
        if not (isinstance(value, str) and value) and not (
            isinstance(value, list) and value and all(isinstance(f, str) and f for f in value)
        ):
            raise ValueError(f"mapping: {key} must be a field or fields joined by +, got {value!r}")
    has_ab, has_cr = "a" in mapping or "b" in mapping, "chosen" in mapping or "rejected" in mapping
    if has_ab and has_cr:
        raise ValueError("mapping: give either a, b and label, or chosen and rejected, not both")
    if has_ab and not all(k in mapping for k in ("a", "b", "label")):
        missing = [k for k in ("a", "b", "label") if k not in mapping]
        raise ValueError(f"mapping: a and b need a label field; missing {', '.join(missing)}")
    if not has_ab:
        mapping = {"chosen": "chosen", "rejected": "rejected", **mapping}
        if "label" in mapping:
            raise ValueError("mapping: chosen and rejected need no label; use a, b and label")
    mapping.setdefault("prompt", "prompt")
    if mapping.setdefault("vote", "majority") not in VOTE_RULES:
        raise ValueError(f"mapping: vote must be one of {VOTE_RULES}, got {mapping['vote']!r}")
    return mapping


def get_path(row: dict, dotted: str) -> Any:
    value: Any = row
    for key in dotted.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def label_side(value: Any, responses: list[str]) -> str | None:
    """The side ("a", "b", "tie") a label value names; None for an empty vote.

    Raises:
        ValueError: a value that names no side (NaN, 3, "maybe").
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, float) and math.isnan(value):
        return None  # a spreadsheet's empty cell: this annotator did not vote
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 1.0 from a spreadsheet export means 1
    if isinstance(value, bool):
        raise ValueError(f"names no response: {value!r}")
    text = str(value).strip()
    if text.lower() in SIDES:
        return SIDES[text.lower()]
    for side, response in zip("ab", responses, strict=True):
        if text == response.strip():
            return side
    raise ValueError(f"must be 1/2, A/B, 0/tie or the text of a response, got {text!r:.60}")


def vote_outcome(sides: list[str], rule: str = "majority") -> int | None:
    """Combine annotator votes ("a", "b", "tie") into the better response's index, or None for a tie.

    `majority`: a side wins with more than half of all votes cast (a, b, tie, tie → tie).
    `plurality`: a side wins with more votes than the other side (a, tie, tie → a).
    `unanimous`: a side wins with every vote cast (a, a, tie → tie).
    """
    counts = Counter(sides)
    if rule == "unanimous":
        return 0 if counts["a"] == len(sides) else 1 if counts["b"] == len(sides) else None
    if rule == "majority":
        need = len(sides) / 2
        return 0 if counts["a"] > need else 1 if counts["b"] > need else None
    return 0 if counts["a"] > counts["b"] else 1 if counts["b"] > counts["a"] else None


def as_text(value: Any) -> str:
    """A field's value as the text it is: a string unchanged, anything else as JSON (`true`, `3`)."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def mapped_converter(mapping: dict[str, Any], folder: Path, kept_as_text: Counter | None = None):
    """Row → [PairwisePreference] under a checked mapping (`parse_mapping`); images stay in `folder`.

    `kept_as_text` counts the responses kept as they are: "empty" strings and "non-string" values.
    """
    from rlhfv.data.images import ImageError, inside

    names = ("a", "b") if "a" in mapping else ("chosen", "rejected")
    kept_as_text = Counter() if kept_as_text is None else kept_as_text
    fields = {k: [mapping[k]] if isinstance(mapping[k], str) else mapping[k] for k in ("prompt", *names)}

    def prompt_text(row: dict) -> str:
        values = [get_path(row, f) for f in fields["prompt"]]
        parts = [as_text(v) for v in values if v is not None and as_text(v).strip()]
        if not parts:
            shown = values[0] if len(values) == 1 else values
            raise RowProblem("+".join(fields["prompt"]), f"must be a non-empty string, got {shown!r:.80}")
        return JOIN.join(parts)

    def response(row: dict, key: str) -> str:
        values = [get_path(row, f) for f in fields[key]]
        if all(v is None for v in values):
            raise RowProblem("+".join(fields[key]), "is missing: a response may be empty, but not absent")
        return JOIN.join(as_text(v) for v in values if v is not None)

    def convert(row: dict) -> list[PairwisePreference]:
        prompt, responses = prompt_text(row), [response(row, names[0]), response(row, names[1])]
        preferred: int | None = 0
        if "label" in mapping:
            sides = []
            for name in mapping["label"]:
                try:
                    side = label_side(get_path(row, name), responses)
                except ValueError as e:
                    raise RowProblem(name, str(e)) from None
                sides += [side] if side else []
            if not sides:
                raise RowProblem("+".join(mapping["label"]), "no label: every label field is empty")
            preferred = vote_outcome(sides, mapping["vote"])
        paths = get_path(row, mapping["images"]) if "images" in mapping else []
        paths = [paths] if isinstance(paths, str) else [] if paths is None else paths  # none: a text row
        if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
            raise RowProblem(mapping["images"], f"must be a path or a list of paths, got {paths!r:.80}")
        try:
            images = [str(inside(p, folder)) for p in paths]
        except ImageError as e:
            raise RowProblem(mapping["images"], str(e)) from None
        source = str(get_path(row, mapping["subset"])) if "subset" in mapping else ""
        pid = str(get_path(row, mapping["id"]) or "") if "id" in mapping else ""
        for key in names:  # counted once the row is kept
            values = [get_path(row, f) for f in fields[key]]
            kept_as_text["non-string"] += any(v is not None and not isinstance(v, str) for v in values)
        kept_as_text["empty"] += sum(not r.strip() for r in responses)
        return [PairwisePreference(pid, prompt, responses, preferred, images, source)]

    return convert


def load_generic(
    path: str | Path, mapping: str | dict[str, Any] | None = None
) -> tuple[list, list[RowError]]:
    """Read any JSON / JSONL preference file through `mapping` (see the module docstring).

    Raises:
        ValueError: a bad mapping, or one that matches no row of the file: the message names the
            field that was missing most often and the fields the first row has.
    """
    mapping = parse_mapping(mapping or {})
    path = Path(path)
    kept: Counter = Counter()
    rows, errors = load_rows(path, mapped_converter(mapping, path.parent, kept))
    if kept["empty"] or kept["non-string"]:
        logger.warning(
            "%s: kept %d empty and %d non-string responses as the text they are (a non-string as its JSON)",
            path,
            kept["empty"],
            kept["non-string"],
        )
    if errors and not rows:
        field, count = Counter(e.field for e in errors).most_common(1)[0]
        first = next((r for _, r, bad in read_rows(path) if not bad and isinstance(r, dict)), {})
        raise ValueError(
            f"{path}: the mapping matches no row: field {field!r} is bad in {count} of {len(errors)} rows "
            f"(first: {errors[0]}); the first row's fields are {sorted(first)}"
        )
    return rows, errors
