"""Examples from a JSONL file: {"prompt": str, "answer": str, "images": [paths], "label": str}.

`answer` is the SFT target; prompt-only files (RL prompts judged by a reward model) may leave it
out when `require_answer` is false.

Image paths are relative to `image_root` (default: the file's folder) and may not escape it.
Malformed rows and unreadable images are reported by file, line and field, and skipped.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from rlhfv.config import ExistingPath
from rlhfv.data.images import ImageError, load_image
from rlhfv.data.preference import RowError, read_rows, report_row_errors
from rlhfv.types import Example, Prompt

logger = logging.getLogger(__name__)


class JsonlExamples:
    """An indexable list of `Example`s read (with images) from a JSONL file.

    Args:
        path: The JSONL file.
        image_root: Folder image paths are relative to; defaults to the file's folder.
        limit: Keep at most this many rows (0: all).
        require_answer: Refuse rows without an `answer` (SFT); false for RL prompt files.
    """

    def __init__(
        self, path: ExistingPath, image_root: str | None = None, limit: int = 0, require_answer: bool = True
    ):
        self.require_answer = require_answer
        self.path = Path(path)
        root = Path(image_root) if image_root else self.path.parent
        self.examples: list[Example] = []
        self.errors: list[RowError] = []
        for lineno, row, json_error in read_rows(self.path):
            example = self._parse(row, json_error, lineno, root)
            if example is not None:
                self.examples.append(example)
            if limit and len(self.examples) >= limit:
                break
        report_row_errors(self.path, len(self.examples), self.errors)
        if not self.examples:
            raise ValueError(f"{self.path}: no usable rows ({len(self.errors)} malformed)")
        logger.info("%s: %d examples, %d rows skipped", self.path, len(self.examples), len(self.errors))

    def _parse(self, row: Any, json_error: str, lineno: int, root: Path) -> Example | None:
        def fail(field: str, message: str) -> None:
            self.errors.append(RowError(str(self.path), lineno, field, message))

        if json_error:
            return fail("<json>", json_error)
        if not isinstance(row, dict):
            return fail("<row>", "expected a JSON object")
        for field in ("prompt", "answer") if self.require_answer else ("prompt",):
            if not isinstance(row.get(field), str) or not row[field].strip():
                return fail(field, f"must be a non-empty string, got {row.get(field)!r:.60}")
        images = row.get("images", [])
        if not isinstance(images, list):
            return fail("images", f"must be a list of paths, got {images!r:.60}")
        loaded = []
        for i, p in enumerate(images):
            try:
                loaded.append(load_image(str(p), root))
            except ImageError as e:
                return fail(f"images[{i}]", str(e))
        label = str(row.get("label", ""))
        return Example(
            prompt=Prompt(text=row["prompt"], images=loaded), answer=str(row.get("answer", "")), label=label
        )

    @staticmethod
    def is_correct(text: str, example: Example) -> bool:
        """Rows with a `label` count as correct when the answer contains it (case-insensitive)."""
        return bool(example.label) and example.label.lower() in text.lower()

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> Example:
        return self.examples[index]
