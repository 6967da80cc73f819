"""Loaders for public preference data sets, into `PairwisePreference` (or `BestOfN` for n > 2).

Every loader reads a JSON list, a JSONL file or a gzipped one, and returns `(rows, errors)`:
malformed rows are skipped and reported as `RowError(file, line, field, message)` (for a JSON
list, `line` is the 1-based position in the list), with a logged count; nothing else is lost.
The preferred response always comes first (`preferred = 0`) except where the source says
otherwise (LLMBar's label); judges shuffle the order themselves. `source` holds the subset name
used for per-subset accuracy.

Formats (`FORMATS`):
- `hh-rlhf`: Anthropic HH-RLHF `{chosen, rejected}` full dialogues; the shared dialogue prefix up to
  the last assistant turn becomes the prompt.
- `llmbar`: LLMBar / PandaLM style `{input, output_1, output_2, label ∈ {1, 2}}`.
- `rm-bench`: RM-Bench `{prompt, chosen: [3], rejected: [3], domain}`: 3×3 style comparisons,
  subset `domain/easy|normal|hard` (hard = the chosen answer is plainer than the rejected one).
- `rmb-pairwise` / `rmb-bon`: RMB `{conversation_input, chosen|bon_best, reject|loser_list, category_path}`.
- `rewardbench`: `{prompt, chosen, rejected, subset}`.
- `rlaifv`: RLAIF-V chat messages with an image: `{prompt: [messages], chosen: [...], rejected: [...]}`.
- `generic`: any JSON/JSONL with a field mapping (see `load_generic`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhfv.config import ExistingPath
from rlhfv.data.preference import PairwisePreference, RowError, read_rows

logger = logging.getLogger(__name__)

Converted = tuple[Any, str, str]  # (row or None, bad field, message)


@dataclass
class BestOfN:
    """A prompt with n ≥ 2 responses of which `preferred` is the best (RMB best-of-N)."""

    id: str
    prompt: str
    responses: list[str]
    preferred: int
    images: list[str] = field(default_factory=list)
    source: str = ""


class RowProblem(ValueError):
    """A row cannot be used; carries the field it is about."""

    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field = field_name


def load_rows(path: str | Path, convert: Callable[[dict], list]) -> tuple[list, list[RowError]]:
    """Apply `convert` (row → list of preferences, or RowProblem) to every row of a file."""
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
                out.append(pref)
        except RowProblem as e:
            errors.append(RowError(str(path), line, e.field, str(e)))
    for e in errors[:20]:
        logger.warning("skipped %s", e)
    if errors:
        logger.warning("%s: kept %d rows, skipped %d malformed rows", path, len(out), len(errors))
    return out, errors


def text_field(row: dict, name: str) -> str:
    value = row.get(name)
    if not isinstance(value, str) or not value.strip():
        raise RowProblem(name, f"must be a non-empty string, got {value!r:.80}")
    return value


def split_dialogue(chosen: str, rejected: str, marker: str = "\n\nAssistant:") -> tuple[str, str, str]:
    """Split two full dialogues into (shared prompt, chosen reply, rejected reply).

    The prompt ends at the last assistant marker that both dialogues share; what follows it is
    each side's final reply.
    """
    cut = chosen.rfind(marker)
    while cut >= 0 and chosen[: cut + len(marker)] != rejected[: cut + len(marker)]:
        cut = chosen.rfind(marker, 0, cut)
    if cut < 0:
        raise RowProblem(
            "chosen", "chosen and rejected share no dialogue prefix ending with an assistant turn"
        )
    end = cut + len(marker)
    prompt, a, b = chosen[:end].strip(), chosen[end:].strip(), rejected[end:].strip()
    if not a or not b:
        raise RowProblem("rejected" if a else "chosen", "the final assistant reply is empty")
    return prompt, a, b


def from_hh_rlhf(row: dict) -> list[PairwisePreference]:
    prompt, chosen, rejected = split_dialogue(text_field(row, "chosen"), text_field(row, "rejected"))
    return [PairwisePreference("", prompt, [chosen, rejected], 0, source="hh-rlhf")]


def from_llmbar(row: dict) -> list[PairwisePreference]:
    label = row.get("label")
    if label not in (1, 2) or isinstance(label, bool):
        raise RowProblem("label", f"must be 1 or 2, got {label!r:.40}")
    responses = [text_field(row, "output_1"), text_field(row, "output_2")]
    return [
        PairwisePreference(
            "", text_field(row, "input"), responses, label - 1, source=str(row.get("subset", ""))
        )
    ]


def from_rm_bench(row: dict) -> list[PairwisePreference]:
    prompt = text_field(row, "prompt")
    chosen, rejected = row.get("chosen"), row.get("rejected")
    for name, value in (("chosen", chosen), ("rejected", rejected)):
        if (
            not isinstance(value, list)
            or len(value) != 3
            or not all(isinstance(v, str) and v.strip() for v in value)
        ):
            raise RowProblem(
                name,
                f"must be a list of 3 non-empty strings (concise, detailed, markdown), got {value!r:.80}",
            )
    domain = str(row.get("domain", "all"))
    base = str(row.get("id", ""))
    out = []
    for i in range(3):  # chosen style
        for j in range(3):  # rejected style; hard when the chosen answer is plainer
            level = "hard" if i < j else "normal" if i == j else "easy"
            pid = f"{base}-{i}{j}" if base else ""
            out.append(
                PairwisePreference(pid, prompt, [chosen[i], rejected[j]], 0, source=f"{domain}/{level}")
            )
    return out


def render_conversation(turns: Any, name: str) -> str:
    """A chat message list as the prompt text (a single user turn is just its text)."""
    if not isinstance(turns, list) or not turns:
        raise RowProblem(name, f"must be a non-empty list of messages, got {turns!r:.80}")
    for t in turns:
        if (
            not isinstance(t, dict)
            or not isinstance(t.get("content"), str)
            or not isinstance(t.get("role"), str)
        ):
            raise RowProblem(name, f"each message needs string 'role' and 'content', got {t!r:.80}")
    if len(turns) == 1:
        return turns[0]["content"]
    return "\n\n".join(f"{t['role'].capitalize()}: {t['content']}" for t in turns)


def answer_of(row: dict, name: str) -> str:
    value = row.get(name)
    answer = value.get("answer") if isinstance(value, dict) else None
    if not isinstance(answer, str) or not answer.strip():
        raise RowProblem(f"{name}.answer", f"must be a non-empty string, got {answer!r:.80}")
    return answer


def rmb_subset(row: dict) -> str:
    parts = str(row.get("category_path", "")).split("/")
    return "/".join(parts[:2]) if len(parts) > 1 else parts[0]  # e.g. "Pairwise_set/Harmlessness"


def from_rmb_pairwise(row: dict) -> list[PairwisePreference]:
    prompt = render_conversation(row.get("conversation_input"), "conversation_input")
    pid = str(row.get("pair_uid", ""))
    return [
        PairwisePreference(
            pid, prompt, [answer_of(row, "chosen"), answer_of(row, "reject")], 0, source=rmb_subset(row)
        )
    ]


def from_rmb_bon(row: dict) -> list[BestOfN]:
    prompt = render_conversation(row.get("conversation_input"), "conversation_input")
    losers = row.get("loser_list")
    if not isinstance(losers, list) or not losers:
        raise RowProblem("loser_list", f"must be a non-empty list, got {losers!r:.80}")
    responses = [answer_of(row, "bon_best")] + [answer_of({"loser": x}, "loser") for x in losers]
    return [BestOfN(str(row.get("bon_uid", "")), prompt, responses, 0, source=rmb_subset(row))]


def from_rewardbench(row: dict) -> list[PairwisePreference]:
    responses = [text_field(row, "chosen"), text_field(row, "rejected")]
    return [
        PairwisePreference(
            str(row.get("id", "")), text_field(row, "prompt"), responses, 0, source=str(row.get("subset", ""))
        )
    ]


def message_text(messages: Any, name: str) -> tuple[str, list[str]]:
    """Text and image URLs of OpenAI-style messages with typed content parts."""
    if not isinstance(messages, list) or not messages:
        raise RowProblem(name, f"must be a non-empty list of messages, got {messages!r:.80}")
    texts, images = [], []
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(parts, list):
            raise RowProblem(
                name, f"message content must be a string or a list of parts, got {content!r:.80}"
            )
        for part in parts:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif isinstance(part, dict) and part.get("type") == "image_url":
                url = (
                    (part.get("image_url") or {}).get("url")
                    if isinstance(part.get("image_url"), dict)
                    else None
                )
                if not isinstance(url, str) or not url:
                    raise RowProblem(f"{name}.image_url", f"missing url in {part!r:.80}")
                images.append(url)
    text = "\n".join(texts).strip()
    if not text:
        raise RowProblem(name, "has no text")
    return text, images


def rlaifv_loader(folder: Path) -> Callable[[dict], list[PairwisePreference]]:
    """RLAIF-V rows; image URLs resolve against `<file folder>/image/` or the file's folder."""

    def convert(row: dict) -> list[PairwisePreference]:
        prompt, urls = message_text(row.get("prompt"), "prompt")
        chosen, _ = message_text(row.get("chosen"), "chosen")
        rejected, _ = message_text(row.get("rejected"), "rejected")
        images = []
        for url in urls:
            found = [p for p in (folder / "image" / url, folder / url, Path(url)) if p.is_file()]
            if not found:
                raise RowProblem(
                    "prompt.image_url", f"image {url!r} not found under {folder / 'image'} or {folder}"
                )
            images.append(str(found[0].resolve()))
        return [PairwisePreference(str(row.get("id", "")), prompt, [chosen, rejected], 0, images, "rlaifv")]

    return convert


def get_path(row: dict, dotted: str) -> Any:
    value: Any = row
    for key in dotted.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def load_generic(
    path: str | Path,
    prompt: str = "prompt",
    chosen: str = "chosen",
    rejected: str = "rejected",
    images: str | None = None,
    subset: str | None = None,
) -> tuple[list[PairwisePreference], list[RowError]]:
    """Any JSON/JSONL file with one preference per row; arguments name the fields (dots reach
    into nested objects: `chosen="answers.good"`). `images` names a path or a list of paths,
    relative to the file's folder."""
    folder = Path(path).parent

    def convert(row: dict) -> list[PairwisePreference]:
        values = {
            name: get_path(row, key)
            for name, key in (("prompt", prompt), ("chosen", chosen), ("rejected", rejected))
        }
        for name, key in (("prompt", prompt), ("chosen", chosen), ("rejected", rejected)):
            if not isinstance(values[name], str) or not values[name].strip():
                raise RowProblem(key, f"must be a non-empty string, got {values[name]!r:.80}")
        paths = get_path(row, images) if images else []
        paths = [paths] if isinstance(paths, str) else paths
        if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
            raise RowProblem(str(images), f"must be a path or a list of paths, got {paths!r:.80}")
        resolved = [str(folder / p) if not Path(p).is_absolute() else p for p in paths]
        source = str(get_path(row, subset)) if subset else ""
        return [
            PairwisePreference(
                "", values["prompt"], [values["chosen"], values["rejected"]], 0, resolved, source
            )
        ]

    return load_rows(path, convert)


FORMATS: dict[str, Callable[[dict], list]] = {
    "hh-rlhf": from_hh_rlhf,
    "llmbar": from_llmbar,
    "rm-bench": from_rm_bench,
    "rmb-pairwise": from_rmb_pairwise,
    "rmb-bon": from_rmb_bon,
    "rewardbench": from_rewardbench,
}


def load_preference_data(fmt: str, path: str | Path, **fields: str) -> tuple[list, list[RowError]]:
    """Load `path` in format `fmt` (a key of FORMATS, "rlaifv", "generic" or "jsonl" — our own
    format, `rlhfv.data.preference`). `fields` are `load_generic`'s field names."""
    if fmt == "generic":
        return load_generic(path, **fields)
    if fmt == "rlaifv":
        return load_rows(path, rlaifv_loader(Path(path).parent))
    if fmt == "jsonl":
        from rlhfv.data.preference import read_preferences

        return read_preferences(path)
    if fmt not in FORMATS:
        known = ", ".join([*FORMATS, "rlaifv", "generic", "jsonl"])
        raise ValueError(f"unknown data format {fmt!r}; known: {known}")
    if fields:
        raise ValueError(f"field names ({', '.join(fields)}) only apply to the 'generic' format")
    rows, errors = load_rows(path, FORMATS[fmt])
    if fmt == "llmbar":  # the subset is the folder: llmbar/Natural/dataset.json → "Natural"
        for r in rows:
            r.source = r.source or Path(path).parent.name
    return rows, errors


SPLITS = ("all", "train", "test")


def select_rows(
    rows: list, split: str = "all", test_fraction: float = 0.2, limit: int = 0, seed: int = 0
) -> list:
    """A fixed train/test split of a file's rows, then an optional random subsample.

    The split is a seeded permutation of row positions (seed 0, independent of `seed`), so the
    same file always splits the same way and the two parts never share a row; `limit` then keeps
    that many rows of the part, drawn with `seed`. Rows keep their file order.
    """
    import random

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    keep = list(range(len(rows)))
    if split != "all":
        order = keep[:]
        random.Random(0).shuffle(order)
        n_test = round(len(rows) * test_fraction)
        keep = sorted(order[:n_test] if split == "test" else order[n_test:])
    if limit and limit < len(keep):
        keep = sorted(random.Random(seed).sample(keep, limit))
    return [rows[i] for i in keep]


class PreferenceData:
    """Preference items from any format above, images loaded: a recipe node for judge pipelines.

    Yields `rlhfv.types.PreferencePair`s (a best-of-n row gives one with n responses).

    Args:
        format: A `load_preference_data` format name ("hh-rlhf", "llmbar", "rlaifv", …).
        path: The data file.
        split: "all", or the "train" / "test" part of the file's fixed split (`select_rows`).
        test_fraction: Share of the rows in the test part.
        limit: Keep a random subsample of this many items of the part, fixed by `seed` (0: all).
        seed: Seed of the subsample.
    """

    def __init__(
        self,
        format: str,
        path: ExistingPath,
        limit: int = 0,
        seed: int = 0,
        split: str = "all",
        test_fraction: float = 0.2,
    ):
        from rlhfv.data.images import ImageError, load_image
        from rlhfv.types import PreferencePair, Prompt

        rows, self.errors = load_preference_data(format, path)
        rows = select_rows(rows, split, test_fraction, limit, seed)
        self.pairs = []
        for r in rows:
            try:
                images = [load_image(p) for p in r.images]
            except ImageError as e:  # one bad image loses its row, never the file
                self.errors.append(RowError(str(path), 0, "images", f"item {r.id}: {e}"))
                continue
            self.pairs.append(
                PreferencePair(Prompt(r.prompt, images), list(r.responses), r.preferred, r.id, r.source)
            )
        if not self.pairs:
            raise ValueError(f"{path}: no usable preference items ({len(self.errors)} rows skipped)")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> Any:
        return self.pairs[index]
