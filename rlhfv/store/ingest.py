"""Bring tasks into the store: a JSONL file with an image folder, a run's rollouts, ShapesVQA.

Every image is checked before it is kept: it must lie inside the folder it is read from (no
`../` escapes or absolute paths), be at most `max_bytes` on disk, declare at most `max_pixels`
in its header (read without decoding, so a 30000x30000 decompression bomb costs nothing) and
then decode cleanly (`rlhfv.data.images.load_image`). The accepted file is copied byte for byte
under its content hash into the store's media folder. A bad row is reported with its file, line and field
and skipped; the other rows are imported.

JSONL task rows:

    {"prompt": "Which caption fits?", "images": ["a.jpg"], "responses": ["A dog.", "A cat."],
     "id": "x1", "source": "pilot", "gold": 0}

`responses` has two or more strings; `gold` (optional) marks a gold item: the index of the best
response, or a list of ranks (0 = best, equal ranks tie). Any other key refuses its row, with the
known key it most likely meant (`preferred` → `gold`): a silently dropped label would turn a gold
item into an ordinary one.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhfv.data.images import MAX_PIXELS, ImageError, inside, load_image
from rlhfv.data.mapping import unknown_key_message
from rlhfv.data.preference import RowError, row_error_lines
from rlhfv.store.store import NewTask, Store

MAX_IMAGE_BYTES = 20 * 2**20
MAX_FILE_BYTES = 200 * 2**20  # a task file bigger than this is refused whole
MAX_RESPONSES = 8
TASK_KEYS = ("prompt", "images", "responses", "id", "source", "gold")
TASK_ALIASES = {  # keys other formats use for ours
    **dict.fromkeys(("preferred", "label", "chosen_index", "winner", "best"), "gold"),
    **dict.fromkeys(("image", "image_path", "img"), "images"),
    **dict.fromkeys(("question", "instruction", "input", "query"), "prompt"),
    **dict.fromkeys(("answers", "completions", "outputs"), "responses"),
}


class ImageRejected(ValueError):
    """An image that must not be imported; the message says why."""


@dataclass
class ImportReport:
    added: int = 0
    duplicates: int = 0
    errors: list[RowError] = field(default_factory=list)

    def __str__(self) -> str:
        text = f"added {self.added} tasks, {self.duplicates} already present, {len(self.errors)} rows skipped"
        return "\n".join([text, *(f"  {line}" for line in row_error_lines(self.errors))])


def store_image(rel: str, root: Path, media_dir: Path, max_pixels: int = MAX_PIXELS,
                max_bytes: int = MAX_IMAGE_BYTES) -> str:  # fmt: skip
    """Check the image `root/rel` and copy its bytes into `media_dir`; return its media file name."""
    try:  # contained before anything is looked at: an outside file's size is not ours to report
        path = inside(rel, root)
    except ImageError as e:
        raise ImageRejected(str(e)) from None
    if path.is_file() and path.stat().st_size > max_bytes:
        raise ImageRejected(
            f"{rel!r} is {path.stat().st_size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB limit"
        )
    try:
        load_image(rel, root, max_pixels)  # escapes, missing, too many pixels, corrupt: all refused
    except ImageError as e:
        raise ImageRejected(str(e)) from None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    suffix = path.suffix.lower() if re.fullmatch(r"\.[a-z0-9]{1,5}", path.suffix.lower()) else ".img"
    target = media_dir / f"{digest}{suffix}"
    if not target.exists():
        tmp = target.with_suffix(".part")
        shutil.copyfile(path, tmp)
        tmp.replace(target)
    return target.name


def store_pil_image(image: Any, media_dir: Path) -> str:
    """Save an in-memory image (one we made, so it needs no checks) as PNG under its content hash."""
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    name = f"{hashlib.sha256(buf.getvalue()).hexdigest()}.png"
    if not (media_dir / name).exists():
        tmp = media_dir / f"{name}.part"
        tmp.write_bytes(buf.getvalue())
        tmp.replace(media_dir / name)  # a killed write never leaves half an image under the real name
    return name


def parse_task_row(row: Any, root: Path, media_dir: Path, max_pixels: int) -> tuple[NewTask | None, str, str]:
    """Check one decoded row; return (task, "", "") or (None, field, message).

    Every problem of the row is named: the field is the first one's, and the message goes on
    with "; also field '…': …" for the others, so one pass over a file shows all that needs fixing.
    """
    if not isinstance(row, dict):
        return None, "<row>", f"expected a JSON object, got {type(row).__name__}"
    problems = [
        (k, unknown_key_message(k, TASK_KEYS, "task", TASK_ALIASES)) for k in row if k not in TASK_KEYS
    ]
    prompt = row.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        problems.append(("prompt", f"must be a non-empty string, got {prompt!r:.80}"))
    responses = row.get("responses")
    if not isinstance(responses, list) or not 2 <= len(responses) <= MAX_RESPONSES:
        problems.append(
            ("responses", f"must be a list of 2 to {MAX_RESPONSES} strings, got {responses!r:.80}")
        )
        responses = None
    else:
        problems += [(f"responses[{i}]", f"must be a non-empty string, got {r!r:.80}")
                     for i, r in enumerate(responses) if not isinstance(r, str) or not r.strip()]  # fmt: skip
    images = row.get("images", [])
    if not isinstance(images, list) or not all(isinstance(p, str) and p for p in images):
        problems.append(("images", f"must be a list of paths, got {images!r:.80}"))
        images = []
    gold = row.get("gold")
    if gold is not None and responses is not None:
        if isinstance(gold, int) and not isinstance(gold, bool) and 0 <= gold < len(responses):
            gold = [0 if i == gold else 1 for i in range(len(responses))]
        elif not (isinstance(gold, list) and len(gold) == len(responses)
                  and all(isinstance(g, int) and not isinstance(g, bool) and 0 <= g < len(responses) for g in gold)):  # fmt: skip
            problems.append(("gold", f"must be a response index or {len(responses)} ranks, got {gold!r:.80}"))
    if not problems:  # images are stored only for a row that is otherwise sound
        stored = []
        for k, rel in enumerate(images):
            try:
                stored.append(store_image(rel, root, media_dir, max_pixels))
            except ImageRejected as e:
                problems.append((f"images[{k}]", str(e)))
    if problems:
        (field_name, message), others = problems[0], problems[1:]
        return None, field_name, message + "".join(f"; also field '{f}': {m}" for f, m in others)
    assert isinstance(prompt, str) and responses is not None  # checked above
    task = NewTask(prompt=prompt, responses=list(responses), images=stored, source=str(row.get("source", "")),
                   external_id=str(row.get("id", "")), gold=gold)  # fmt: skip
    return task, "", ""


def import_jsonl(store: Store, path: str | Path, image_dir: str | Path | None = None, overlap: int | None = None,
                 max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_FILE_BYTES) -> ImportReport:  # fmt: skip
    """Import task rows from a JSONL file; images are looked up in `image_dir` (default: its folder)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"task file not found: {path}")
    size = path.stat().st_size
    if size > max_bytes:
        raise ValueError(
            f"{path} is {size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB limit for a task file"
        )
    root = Path(image_dir) if image_dir is not None else path.parent
    tasks, report = [], ImportReport()
    with path.open(encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                report.errors.append(RowError(str(path), lineno, "<json>", f"not valid JSON ({e.msg})"))
                continue
            task, bad_field, message = parse_task_row(row, root, store.media_dir, max_pixels)
            if task is None:
                report.errors.append(RowError(str(path), lineno, bad_field, message))
                continue
            task.source = task.source or path.stem
            task.external_id = task.external_id or str(lineno)
            tasks.append(task)
    report.added, report.duplicates = store.add_tasks(tasks, overlap)
    return report


def rollout_task(row: Any, run_dir: Path, media_dir: Path, responses_per_task: int = 4,
                 max_pixels: int = MAX_PIXELS, line: int | None = None) -> tuple[NewTask | None, str, str]:  # fmt: skip
    """A task from one `rollouts.jsonl` row (at 1-based `line`): its prompt, images and distinct
    completions. Its external id `step<S>-line<L>` names the rollout it came from."""
    if not isinstance(row, dict):
        return None, "<row>", f"expected a JSON object, got {type(row).__name__}"
    completions = row.get("completions")
    if not isinstance(completions, list):
        completions = []
    distinct = list(dict.fromkeys(c for c in completions if isinstance(c, str) and c.strip()))
    candidate = {
        "prompt": row.get("prompt"),
        "images": row.get("images", []),
        "responses": distinct[:responses_per_task],
    }
    task, bad_field, message = parse_task_row(candidate, run_dir, media_dir, max_pixels)
    if task is None and bad_field.startswith("responses"):
        return None, "completions", f"needs at least two distinct non-empty completions, got {len(distinct)}"
    if task is not None:
        task.source = f"rollout:{run_dir.resolve().name}"
        task.external_id = (
            f"step{row.get('step', 0)}-line{line}" if line is not None else f"step{row.get('step', 0)}"
        )
    return task, bad_field, message


def import_rollouts(store: Store, run_dir: str | Path, overlap: int | None = None, min_step: int = 0,
                    responses_per_task: int = 4, max_pixels: int = MAX_PIXELS) -> ImportReport:  # fmt: skip
    """Import a run's sampled completions (`rollouts.jsonl`) as tasks; the GRM's verdicts stay hidden.

    Identical completions are merged and the first `responses_per_task` distinct ones kept (people
    rank four responses well; sixteen badly).
    """
    run_dir = Path(run_dir)
    path = run_dir / "rollouts.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no rollouts.jsonl in run folder {run_dir}")
    tasks, report = [], ImportReport()
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            report.errors.append(RowError(str(path), lineno, "<json>", f"not valid JSON ({e.msg})"))
            continue
        step = row.get("step", 0) if isinstance(row, dict) else 0
        if not isinstance(step, int) or step < min_step:
            continue
        task, bad_field, message = rollout_task(
            row, run_dir, store.media_dir, responses_per_task, max_pixels, lineno
        )
        if task is None:
            report.errors.append(RowError(str(path), lineno, bad_field, message))
            continue
        tasks.append(task)
    report.added, report.duplicates = store.add_tasks(tasks, overlap)
    return report


def import_shapes(store: Store, n: int = 50, seed: int = 0, split: str = "train", overlap: int | None = None,
                  as_gold: bool = True) -> ImportReport:  # fmt: skip
    """Import ShapesVQA preference pairs; their answers are known, so by default they are gold items."""
    from rlhfv.data.shapes import ShapesVQA

    data = ShapesVQA(size=n, split=split, seed=seed)
    tasks = []
    for index in range(n):
        pair = data.preference_pair(index)
        names = [store_pil_image(image, store.media_dir) for image in pair.prompt.images]
        gold = [0 if i == pair.preferred else 1 for i in range(2)] if as_gold else None
        tasks.append(NewTask(prompt=pair.prompt.text, responses=list(pair.responses), images=names,
                             source="shapes", external_id=pair.id, gold=gold))  # fmt: skip
    added, duplicates = store.add_tasks(tasks, overlap)
    return ImportReport(added=added, duplicates=duplicates)
