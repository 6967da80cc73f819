"""The pairwise preference format: what annotators export and what GRM training reads.

One JSON object per line:

    {"id": "t17-a3", "prompt": "What colour is the circle?", "images": ["img/17.png"],
     "responses": ["The circle is red.", "It is blue."], "preferred": 0, "source": "annotate"}

`images` are paths, relative to the JSONL file's folder unless absolute; `preferred` is the index
(0 or 1) of the better response. Ties carry no training signal and are not written. This module is
the single definition of the format: the annotation app's export and every GRM pipeline use it.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclass
class PairwisePreference:
    """A prompt (with images) and two responses, one of which a person or rule preferred."""

    id: str
    prompt: str
    responses: list[str]
    preferred: int | None  # None: a tie (the generic format keeps ties; this file format has none)
    images: list[str] = field(default_factory=list)
    source: str = ""
    line: int = field(default=0, compare=False)  # where it was read (0: not from a file); not written


@dataclass
class RowError:
    """A data row that was skipped, with where it is and why."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: field '{self.field}': {self.message}"


class RowProblem(ValueError):
    """A row cannot be used; carries the field it is about."""

    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field = field_name


MAX_REPORTED = 20


def row_error_lines(errors: list[RowError], limit: int = MAX_REPORTED) -> list[str]:
    """The first `limit` row errors in full, then one line counting the rest."""
    lines = [str(e) for e in errors[:limit]]
    return lines + [f"... and {len(errors) - limit} more skipped rows"] if len(errors) > limit else lines


def report_row_errors(path: str | Path, kept: int, errors: list[RowError]) -> None:
    """Log a reader's skipped rows the one way every reader does (`row_error_lines`), then the counts."""
    if errors:
        for line in row_error_lines(errors):
            logger.warning("skipped %s", line)
        logger.warning("%s: kept %d rows, skipped %d malformed rows", path, kept, len(errors))


def read_rows(path: Path) -> Iterator[tuple[int, Any, str]]:
    """Yield (line, decoded row, "") or (line, None, JSON error) for .json / .jsonl (optionally .gz)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        if path.name.removesuffix(".gz").endswith(".json"):
            try:
                rows = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from e
            if not isinstance(rows, list):
                raise ValueError(f"{path}: expected a JSON list of rows, got {type(rows).__name__}")
            yield from ((i, row, "") for i, row in enumerate(rows, start=1))
            return
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line), ""
            except json.JSONDecodeError as e:
                yield lineno, None, f"not valid JSON ({e.msg})"


def parse_preference(row: object) -> tuple[PairwisePreference | None, str, str]:
    """Check one decoded JSON row; return (preference, "", "") or (None, field, message)."""
    if not isinstance(row, dict):
        return None, "<row>", f"expected a JSON object, got {type(row).__name__}"
    prompt = row.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return None, "prompt", f"must be a non-empty string, got {prompt!r:.80}"
    responses = row.get("responses")
    if not isinstance(responses, list) or len(responses) != 2:
        return None, "responses", f"must be a list of two strings, got {responses!r:.80}"
    for i, r in enumerate(responses):
        if not isinstance(r, str) or not r.strip():
            return None, f"responses[{i}]", f"must be a non-empty string, got {r!r:.80}"
    preferred = row.get("preferred")
    if isinstance(preferred, bool) or not isinstance(preferred, (int, float)) or preferred not in (0, 1):
        bad = preferred if not (isinstance(preferred, float) and math.isnan(preferred)) else "NaN"
        return None, "preferred", f"must be 0 or 1, got {bad!r}"
    images = row.get("images", [])
    if not isinstance(images, list) or not all(isinstance(p, str) and p for p in images):
        return None, "images", f"must be a list of paths, got {images!r:.80}"
    pref = PairwisePreference(
        id=str(row.get("id", "")),
        prompt=prompt,
        responses=list(responses),
        preferred=int(preferred),
        images=images,
        source=str(row.get("source", "")),
    )
    return pref, "", ""


def load_rows(path: str | Path, convert: Callable[[dict], list]) -> tuple[list, list[RowError]]:
    """Apply `convert` (row → list of preferences, or RowProblem) to every row of a file.

    Each preference remembers its row's `line`; one without an id gets `<file stem>-<line>`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    out: list = []
    errors: list[RowError] = []
    for line, row, json_error in read_rows(path):
        if json_error:
            errors.append(RowError(str(path), line, "<json>", json_error))
            continue
        try:
            if not isinstance(row, dict):
                raise RowProblem("<row>", f"expected a JSON object, got {type(row).__name__}")
            for k, pref in enumerate(convert(row)):
                pref.id = pref.id or f"{path.stem}-{line}" + (f"-{k}" if k else "")
                pref.line = line
                out.append(pref)
        except RowProblem as e:
            errors.append(RowError(str(path), line, e.field, str(e)))
    report_row_errors(path, len(out), errors)
    return out, errors


PREFERENCE_KEYS = ("id", "prompt", "images", "responses", "preferred", "source")
# optional: each response's short answer and the reference answer, which a "compare" judge quotes
# (written by the active loop, read by `rlhfv.data.pairs.AnsweredPairs`; other readers ignore them)
ANSWER_KEYS = ("answers", "reference")
PREFERENCE_ALIASES = {  # keys other formats use for ours
    **dict.fromkeys(("chosen", "rejected", "completions"), "responses"),
    **dict.fromkeys(("label", "winner", "gold"), "preferred"),
    **dict.fromkeys(("image", "image_path"), "images"),
    **dict.fromkeys(("question", "instruction", "query"), "prompt"),
}


def unknown_preference_key(key: str) -> str:
    """'unknown key …; did you mean …?' for a key of this file format."""
    import difflib

    guess = PREFERENCE_ALIASES.get(key) or next(
        iter(difflib.get_close_matches(key, PREFERENCE_KEYS, n=1)), None
    )
    hint = f"; did you mean {guess!r}?" if guess else ""
    return f"unknown key {key!r}{hint} (known: {', '.join(PREFERENCE_KEYS)}; other layouts: --format generic --map)"


def read_preferences(path: str | Path) -> tuple[list[PairwisePreference], list[RowError]]:
    """Read a preference JSONL file, skipping (and reporting) malformed rows.

    Image paths must lie inside the file's folder (no absolute or `../` paths) and are made
    absolute. A key outside `PREFERENCE_KEYS` and `ANSWER_KEYS` makes its row a RowError with a did-you-mean (a
    misspelled `preferred` must not go unnoticed). Returns the good rows and one RowError per
    skipped row.
    """
    from rlhfv.data.images import ImageError, inside

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"preference file not found: {path}")

    def convert(row: dict) -> list[PairwisePreference]:
        unknown = [k for k in row if k not in PREFERENCE_KEYS and k not in ANSWER_KEYS]
        if unknown:
            raise RowProblem(unknown[0], unknown_preference_key(unknown[0]))
        pref, bad_field, message = parse_preference(row)
        if pref is None:
            raise RowProblem(bad_field, message)
        for i, p in enumerate(pref.images):
            try:
                pref.images[i] = str(inside(p, path.parent))
            except ImageError as e:
                raise RowProblem(f"images[{i}]", str(e)) from None
        return [pref]

    return load_rows(path, convert)


def write_preferences(prefs: list[PairwisePreference], path: str | Path) -> None:
    """Write preferences as JSONL, atomically (a crash leaves the old file or none)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for p in prefs:
            row = {k: v for k, v in asdict(p).items() if k != "line"}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
