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
from collections.abc import Iterator
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
    preferred: int
    images: list[str] = field(default_factory=list)
    source: str = ""


@dataclass
class RowError:
    """A data row that was skipped, with where it is and why."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: field '{self.field}': {self.message}"


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


def read_preferences(path: str | Path) -> tuple[list[PairwisePreference], list[RowError]]:
    """Read a preference JSONL file, skipping (and reporting) malformed rows.

    Image paths are made absolute against the file's folder. Returns the good rows and one
    RowError per skipped row; nothing else in the file is lost.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"preference file not found: {path}")
    prefs: list[PairwisePreference] = []
    errors: list[RowError] = []
    for lineno, row, json_error in read_rows(path):
        if json_error:
            errors.append(RowError(str(path), lineno, "<json>", json_error))
            continue
        pref, bad_field, message = parse_preference(row)
        if pref is None:
            errors.append(RowError(str(path), lineno, bad_field, message))
            continue
        pref.images = [
            str((path.parent / p).resolve()) if not Path(p).is_absolute() else p for p in pref.images
        ]
        if not pref.id:
            pref.id = f"{path.stem}-{lineno}"
        prefs.append(pref)
    for e in errors:
        logger.warning("skipped %s", e)
    if errors:
        logger.warning("%s: kept %d rows, skipped %d malformed rows", path, len(prefs), len(errors))
    return prefs, errors


def write_preferences(prefs: list[PairwisePreference], path: str | Path) -> None:
    """Write preferences as JSONL, atomically (a crash leaves the old file or none)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for p in prefs:
            f.write(json.dumps(asdict(p), ensure_ascii=False) + "\n")
    tmp.replace(path)
