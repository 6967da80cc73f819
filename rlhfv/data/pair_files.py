"""Preference pairs for training a policy or a reward model, read strictly from a file.

`PairFile` reads either of the two formats the project writes, and yields `PreferencePair`s with
their images loaded:

- rlhfv's own (`rlhfv.data.preference`): `{"prompt", "responses": [a, b], "preferred": 0|1, "images"}`;
- TRL's preference format, which `DPOTrainer` reads: `{"prompt", "chosen", "rejected", "images"}`,
  each of the three either a string or a list of chat messages (`{"role", "content"}`, content a
  string or typed parts; `{"type": "image"}` parts mark where `images` go).

A path to a folder is read as an annotation export (`rlhfv.store.export`): its `trl.jsonl`.

Unlike the judge-evaluation loaders, which skip what they cannot use, a training set refuses a bad
row by default: an empty chosen or rejected response, two identical responses, or an image that is
missing raise an error naming the file, line and field. `skip_bad_rows` skips such rows and counts
them instead (`errors` holds each one).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlhfv.config import ExistingPath
from rlhfv.data.images import ImageError, load_image
from rlhfv.data.preference import RowError, read_rows
from rlhfv.types import PreferencePair, Prompt

logger = logging.getLogger(__name__)

EXPORT_FILE = "trl.jsonl"  # what a folder (an annotation export snapshot) is read from


class BadRow(ValueError):
    """A row that cannot be trained on; carries the field it is about."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def messages_text(value: Any, name: str) -> tuple[str, str | None, int]:
    """(text, system message or None, number of image placeholders) of a string or a message list."""
    if isinstance(value, str):
        return value, None, 0
    if not isinstance(value, list) or not value:
        raise BadRow(name, f"must be a string or a non-empty list of messages, got {value!r:.80}")
    texts, system, images = [], None, 0
    turns = sum(1 for m in value if not (isinstance(m, dict) and m.get("role") == "system"))
    for i, message in enumerate(value):
        content = message.get("content") if isinstance(message, dict) else None
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(parts, list):
            raise BadRow(f"{name}[{i}].content", f"must be a string or a list of parts, got {content!r:.80}")
        text = "".join(p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str))
        images += sum(1 for p in parts if isinstance(p, dict) and p.get("type") == "image")
        if message.get("role") == "system":
            system = text
        elif turns > 1:  # a dialogue: every turn stays in view, named by its role
            texts.append(f"{message.get('role', 'user')}: {text}")
        else:
            texts.append(text)
    return "\n".join(texts), system, images


def row_pair(row: Any) -> tuple[str, str | None, str, str, list[str], str]:
    """(prompt, system, chosen, rejected, image paths, id) of one decoded row."""
    if not isinstance(row, dict):
        raise BadRow("<row>", f"expected a JSON object, got {type(row).__name__}")
    prompt, system, slots = messages_text(row.get("prompt"), "prompt")
    if "responses" in row:  # rlhfv's own format
        responses, preferred = row["responses"], row.get("preferred")
        if not isinstance(responses, list) or len(responses) != 2:
            raise BadRow("responses", f"must be a list of two responses, got {responses!r:.80}")
        if isinstance(preferred, bool) or preferred not in (0, 1):
            raise BadRow("preferred", f"must be 0 or 1, got {preferred!r}")
        chosen_name, rejected_name = f"responses[{preferred}]", f"responses[{1 - preferred}]"
        chosen_value, rejected_value = responses[preferred], responses[1 - preferred]
    elif "chosen" in row or "rejected" in row:
        chosen_name, rejected_name = "chosen", "rejected"
        chosen_value, rejected_value = row.get("chosen"), row.get("rejected")
    else:
        raise BadRow(
            "<row>",
            f"has neither 'responses' (rlhfv format) nor 'chosen'/'rejected' (TRL format): keys {sorted(row)}",
        )
    chosen, _, _ = messages_text(chosen_value, chosen_name)
    rejected, _, _ = messages_text(rejected_value, rejected_name)
    if not prompt.strip():
        raise BadRow("prompt", "is empty")
    for name, text in ((chosen_name, chosen), (rejected_name, rejected)):
        if not text.strip():
            raise BadRow(name, "is empty: a preference needs two real responses")
    if chosen.strip() == rejected.strip():
        raise BadRow(
            rejected_name, f"equals the chosen response ({chosen.strip()!r:.60}): the pair teaches nothing"
        )
    images = row.get("images", [])
    images = [images] if isinstance(images, str) else images
    if not isinstance(images, list) or not all(isinstance(p, str) and p for p in images):
        raise BadRow("images", f"must be a list of image paths, got {images!r:.80}")
    if slots and slots != len(images):
        raise BadRow(
            "images", f"the prompt has {slots} image placeholders but the row lists {len(images)} images"
        )
    return prompt, system, chosen, rejected, images, str(row.get("id", ""))


class PairFile:
    """Preference pairs from a JSONL/JSON file or an annotation export folder (module docstring).

    Args:
        path: The file, or an export folder (its `trl.jsonl` is read).
        image_root: Folder relative image paths are taken against (default: the file's folder);
            a path may not escape it.
        skip_bad_rows: Skip malformed rows (and count them in `skipped`) instead of raising.
        limit: Keep the first this many pairs (0: all).
    Each pair's chosen response is stored first (`preferred` 0).
    """

    def __init__(
        self, path: ExistingPath, image_root: str | None = None, skip_bad_rows: bool = False, limit: int = 0
    ):
        self.path = Path(path)
        if self.path.is_dir():
            self.path = self.path / EXPORT_FILE
            if not self.path.is_file():
                raise FileNotFoundError(
                    f"{path}: a folder is read as an annotation export, but it has no {EXPORT_FILE}"
                )
        root = Path(image_root) if image_root else self.path.parent
        self.pairs: list[PreferencePair] = []
        self.errors: list[RowError] = []
        for lineno, row, json_error in read_rows(self.path):
            try:
                if json_error:
                    raise BadRow("<json>", json_error)
                self.pairs.append(self.parse(row, lineno, root))
            except BadRow as e:
                error = RowError(str(self.path), lineno, e.field, str(e))
                if not skip_bad_rows:
                    raise ValueError(f"{error} (skip_bad_rows: true skips such rows and counts them)") from e
                self.errors.append(error)
            if limit and len(self.pairs) >= limit:
                break
        self.skipped = len(self.errors)
        if self.skipped:
            logger.warning("%s: skipped %d bad rows, first: %s", self.path, self.skipped, self.errors[0])
        if not self.pairs:
            raise ValueError(f"{self.path}: no usable preference pairs ({self.skipped} bad rows skipped)")

    def parse(self, row: Any, lineno: int, root: Path) -> PreferencePair:
        prompt, system, chosen, rejected, paths, row_id = row_pair(row)
        images = []
        for i, p in enumerate(paths):
            try:
                images.append(load_image(p, None if Path(p).is_absolute() else root))
            except ImageError as e:
                raise BadRow(f"images[{i}]", str(e)) from e
        return PreferencePair(
            prompt=Prompt(prompt, images, system=system),
            responses=[chosen, rejected],
            preferred=0,
            id=row_id or f"{self.path.stem}-{lineno}",
            source=self.path.name,
        )

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> PreferencePair:
        return self.pairs[index]


def checked_pairs(data: Any, indices: Sequence[int]) -> list[PreferencePair]:
    """The data set's pairs at `indices`, refusing ones that cannot be trained on (files are
    checked row by row when read; this catches in-memory data sets)."""
    pairs = [data[i] for i in indices]
    for i, pair in zip(indices, pairs, strict=True):
        texts = [r.strip() if isinstance(r, str) else "" for r in pair.responses]
        if len(texts) != 2 or pair.preferred not in (0, 1) or not all(texts) or texts[0] == texts[1]:
            raise ValueError(
                f"{type(data).__name__}[{i}] (id {pair.id!r}): a pair needs two different non-empty "
                f"responses and preferred 0 or 1, got responses={pair.responses!r:.120}, preferred={pair.preferred!r}"
            )
    return pairs
