"""Data sets by name through `datasets.load_dataset`: Hub names and local json/jsonl/parquet/arrow.

`HubExamples` yields `Example`s (prompts, SFT rows) and `HubPairs` yields `PreferencePair`s, from
any schema of `rlhfv.data.schemas` (found from the columns, or named) or a field mapping. Rows are
converted and their images decoded only when a row is read: a local or downloaded set stays in
datasets' memory-mapped Arrow files, so memory does not grow with the number of rows
(`benchmarks/lazy_data_memory.py`). A streamed set (`streaming: true`, for sets too large to
download) keeps the first `limit` rows, their images still encoded.

A row that cannot be used (a missing field, an image that does not decode) is an error naming the
data set, the row and the field; with `skip_bad_rows` it is skipped (the next good row is read in
its place) and counted in `bad_rows`.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

from rlhfv.data.images import MAX_PIXELS, ImageError, load_image, open_image
from rlhfv.data.preference import RowProblem
from rlhfv.data.schemas import EXAMPLE_SCHEMAS, PAIR_SCHEMAS, detect_schema, generic_example, generic_pair
from rlhfv.types import Example, PreferencePair, Prompt

logger = logging.getLogger(__name__)

BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".arrow": "arrow", ".csv": "csv"}


def open_dataset(
    path: str,
    split: str = "train",
    name: str | None = None,
    data_files: str | list[str] | None = None,
    revision: str | None = None,
    streaming: bool = False,
) -> Any:
    """`datasets.load_dataset` for a Hub name, a local folder or a local file (by its suffix),
    with every image column left encoded (decoded per row on reading).

    Raises:
        FileNotFoundError / ValueError: from datasets, with the name and split added.
    """
    import datasets

    local = Path(path)
    if local.is_file():  # one local file: the builder its suffix names
        suffix = local.suffix if local.suffix != ".gz" else Path(local.stem).suffix
        if suffix not in BUILDERS:
            raise ValueError(
                f"{path}: a data file must end in {', '.join(BUILDERS)} (or a folder / Hub name)"
            )
        path, data_files = BUILDERS[suffix], str(local)
    options: dict[str, Any] = {}
    if path == "parquet" and not streaming:
        # Converting to datasets' Arrow cache: without pre-buffering, and in batches of 100 rows
        # (the row group size of image sets on the Hub), the peak stays near one batch of rows.
        import pyarrow.dataset as pads

        options = {"fragment_scan_options": pads.ParquetFragmentScanOptions(pre_buffer=False)}
        options["writer_batch_size"] = 100
    try:
        ds = datasets.load_dataset(
            path, name, split=split, data_files=data_files, revision=revision, streaming=streaming, **options
        )
    except (FileNotFoundError, ValueError, ConnectionError) as e:
        raise type(e)(f"data set {path!r} (split {split!r}): {e}") from e
    if streaming:
        return ds.decode(False)
    return ds.with_format("arrow")  # rows come back as Arrow, images as {bytes, path}, undecoded


def decode_image(raw: Any, root: Path | None, max_pixels: int = MAX_PIXELS) -> Any:
    """A PIL RGB image from datasets' `{bytes, path}`, a path (inside `root`) or a PIL image."""
    from PIL import Image

    if isinstance(raw, Image.Image):
        return raw.convert("RGB")
    if isinstance(raw, dict) and raw.get("bytes"):
        return open_image(io.BytesIO(raw["bytes"]), max_pixels)
    path = raw.get("path") if isinstance(raw, dict) else raw
    if not isinstance(path, str) or not path:
        raise ImageError(f"expected image bytes or a path, got {raw!r:.80}")
    if root is None and not Path(path).is_absolute():
        raise ImageError(f"{path}: a relative image path needs `image_root`")
    return load_image(path, root, max_pixels)


class _LazyRows:
    """Rows of a loaded data set, converted and decoded one at a time, bad rows skipped or fatal."""

    def __init__(self, path: str, split: str, name: str | None, data_files: Any, revision: str | None,
                 streaming: bool, limit: int, schema: str, mapping: dict | None, image_root: str | None,
                 skip_bad_rows: bool, pairs: bool):  # fmt: skip
        self.where = f"{path}" + (f" ({data_files})" if data_files else "") + f" split {split!r}"
        ds = open_dataset(path, split, name, data_files, revision, streaming)
        if streaming:
            if not limit:
                raise ValueError(f"{self.where}: a streamed data set needs `limit` (the rows to keep)")
            ds = list(ds.take(limit))  # the first `limit` rows, images still encoded
        elif limit:
            ds = ds.select(range(min(limit, len(ds))))
        self.ds, self.pairs, self.skip_bad_rows = ds, pairs, skip_bad_rows
        if not len(ds):
            raise ValueError(f"{self.where}: no rows")
        local = Path(path)
        self.root = Path(image_root) if image_root else local.parent if local.is_file() else None
        self.convert = self._converter(schema, mapping, list(self.row(0)), self.row(0))
        self.bad_rows: set[int] = set()

    def row(self, index: int) -> dict:
        if isinstance(self.ds, list):
            return self.ds[index]
        return self.ds[index].to_pylist()[0]  # one Arrow row → a plain dict

    def _converter(self, schema: str, mapping: dict | None, columns: list[str], first: dict) -> Any:
        from rlhfv.data.mapping import parse_mapping

        if mapping is not None or schema == "generic":
            if mapping is None:
                raise ValueError(f"{self.where}: schema 'generic' needs a `mapping`")
            if not self.pairs:
                return generic_example(dict(mapping))
            return generic_pair(parse_mapping(dict(mapping) if isinstance(mapping, dict) else mapping))
        schemas = PAIR_SCHEMAS if self.pairs else EXAMPLE_SCHEMAS
        if schema == "auto":
            try:
                schema = detect_schema(columns, first, self.pairs)
            except ValueError as e:
                raise ValueError(f"{self.where}: {e}") from None
        if schema not in schemas:
            raise ValueError(
                f"{self.where}: unknown schema {schema!r}; known: auto, generic, {', '.join(schemas)}"
            )
        convert, needs = schemas[schema]
        for alternatives in needs:
            if not set(alternatives) & set(columns):
                raise ValueError(
                    f"{self.where}: column {' or '.join(map(repr, alternatives))} is needed by the "
                    f"{schema!r} schema, but the data has only {sorted(columns)}"
                )
        logger.info("%s: %d rows, schema %s", self.where, len(self.ds), schema)
        return convert

    def read(self, index: int) -> tuple[Any, list[Any]]:
        """The converted row at `index` (or, skipping bad ones, the next good row) and its images."""
        for offset in range(len(self.ds)):
            i = (index + offset) % len(self.ds)
            try:
                parts = self.convert(self.row(i))
            except RowProblem as e:
                field, problem = e.field, e
            else:
                try:
                    return parts, [decode_image(raw, self.root) for raw in parts.images]
                except ImageError as e:
                    field, problem = "images", e
            message = f"{self.where}: row {i}, field {field!r}: {problem}"
            if not self.skip_bad_rows:
                raise ValueError(f"{message} (set skip_bad_rows: true to skip such rows)") from problem
            if i not in self.bad_rows:
                self.bad_rows.add(i)
                logger.warning("skipped %s (%d bad rows so far)", message, len(self.bad_rows))
        raise ValueError(f"{self.where}: every row is bad ({len(self.bad_rows)} skipped)")


class HubExamples:
    """Prompts and SFT rows from a data set by name (`datasets.load_dataset`), read lazily.

    Args:
        path: A Hub name (`HuggingFaceM4/...`), a local folder, or a .json/.jsonl/.parquet/.arrow file.
        split: The split to read ("train", "test[:100]" …).
        name: The data set's configuration (subset), where it has several.
        data_files: Files within `path` (a Hub repository or folder) to read.
        revision: Branch, tag or commit of a Hub data set.
        streaming: Stream instead of downloading; keeps the first `limit` rows.
        limit: Keep at most this many rows (0: all).
        schema: "auto" (from the columns), "messages", "conversations", "prompt" or "generic".
        mapping: Column per key (`prompt`, `answer`, `images`, `label`, `system`), for any layout.
        image_root: Folder that relative image paths (LLaVA JSON) are inside; default: the file's folder.
        require_answer: Refuse rows without an answer (SFT); false for RL prompts.
        skip_bad_rows: Skip (and count in `bad_rows`) rows that cannot be used, instead of failing.
    """

    def __init__(self, path: str, split: str = "train", name: str | None = None,
                 data_files: str | list[str] | None = None, revision: str | None = None,
                 streaming: bool = False, limit: int = 0, schema: str = "auto",
                 mapping: dict[str, Any] | None = None, image_root: str | None = None,
                 require_answer: bool = True, skip_bad_rows: bool = False):  # fmt: skip
        self.rows = _LazyRows(path, split, name, data_files, revision, streaming, limit, schema,
                              mapping, image_root, skip_bad_rows, pairs=False)  # fmt: skip
        self.require_answer = require_answer

    @property
    def bad_rows(self) -> int:
        return len(self.rows.bad_rows)

    def __len__(self) -> int:
        return len(self.rows.ds)

    def __getitem__(self, index: int) -> Example:
        parts, images = self.rows.read(index)
        if self.require_answer and not parts.answer:
            raise ValueError(
                f"{self.rows.where}: row {index} has no answer (set require_answer: false for prompts)"
            )
        return Example(Prompt(parts.text, images, parts.system), parts.answer, parts.label)

    @staticmethod
    def is_correct(text: str, example: Example) -> bool:
        """Rows with a `label` count as correct when the answer contains it (case-insensitive)."""
        return bool(example.label) and example.label.lower() in text.lower()


class HubPairs:
    """Preference pairs from a data set by name (`datasets.load_dataset`), read lazily.

    Arguments as `HubExamples`; `schema` is "auto", "trl-preference", "rlaif-v", "vlfeedback" or
    "generic", and `mapping` is the generic preference mapping (`rlhfv.data.mapping`). A tied row
    (a generic label vote) is a bad row: it carries no preference.
    """

    def __init__(self, path: str, split: str = "train", name: str | None = None,
                 data_files: str | list[str] | None = None, revision: str | None = None,
                 streaming: bool = False, limit: int = 0, schema: str = "auto",
                 mapping: dict[str, Any] | str | None = None, image_root: str | None = None,
                 skip_bad_rows: bool = False):  # fmt: skip
        self.rows = _LazyRows(path, split, name, data_files, revision, streaming, limit, schema,
                              mapping, image_root, skip_bad_rows, pairs=True)  # fmt: skip

    @property
    def bad_rows(self) -> int:
        return len(self.rows.bad_rows)

    def __len__(self) -> int:
        return len(self.rows.ds)

    def __getitem__(self, index: int) -> PreferencePair:
        parts, images = self.rows.read(index)
        return PreferencePair(
            Prompt(parts.text, images, parts.system), parts.responses, parts.preferred,
            parts.id or f"{self.rows.where}#{index}", parts.source,
        )  # fmt: skip
