"""Loaders for public preference data sets, into `PairwisePreference` (or `BestOfN` for n > 2).

Every loader reads a JSON list, a JSONL file or a gzipped one, and returns `(rows, errors)`:
malformed rows are skipped and reported as `RowError(file, line, field, message)` (for a JSON
list, `line` is the 1-based position in the list), the first 20 in full and then a count
(`rlhfv.data.preference.report_row_errors`); nothing else is lost. The preferred response always
comes first (`preferred = 0`) except where the source says otherwise (LLMBar's label); judges
shuffle the order themselves. `source` holds the subset name used for per-subset accuracy. Image
paths must stay inside the data file's folder.

The formats are `describe_formats()`: each converter's docstring names the fields it reads, and
`rlhfv eval grm --help` shows them. `generic` reads any file through a field mapping
(`rlhfv.data.mapping`), `jsonl` is our own format (`rlhfv.data.preference`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhfv.config import ExistingPath
from rlhfv.data.images import ImageError, inside
from rlhfv.data.preference import PairwisePreference, RowError, RowProblem, load_rows

logger = logging.getLogger(__name__)


@dataclass
class BestOfN:
    """A prompt with n ≥ 2 responses of which `preferred` is the best (RMB best-of-N)."""

    id: str
    prompt: str
    responses: list[str]
    preferred: int
    images: list[str] = field(default_factory=list)
    source: str = ""
    line: int = field(default=0, compare=False)  # the file row it came from


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
    """Anthropic HH-RLHF `{chosen, rejected}` full dialogues; the shared prefix is the prompt."""
    prompt, chosen, rejected = split_dialogue(text_field(row, "chosen"), text_field(row, "rejected"))
    return [PairwisePreference("", prompt, [chosen, rejected], 0, source="hh-rlhf")]


def from_llmbar(row: dict) -> list[PairwisePreference]:
    """LLMBar / PandaLM `{input, output_1, output_2, label: 1|2}`; subset: the folder, id `subset/row`."""
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
    """RM-Bench `{id, prompt, chosen: [3], rejected: [3], subset}`: 3×3 style pairs, subset/easy|normal|hard."""
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
    domain = str(row.get("subset") or row.get("domain") or "all")  # the released files name it subset
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
    """The whole category path (e.g. "Pairwise_set/Harmlessness/S1/Violent crimes"): RMB scores per path."""
    return str(row.get("category_path", "")).strip("/")


def from_rmb_pairwise(row: dict) -> list[PairwisePreference]:
    """RMB pairwise `{pair_uid, conversation_input, chosen.answer, reject.answer, category_path}`."""
    prompt = render_conversation(row.get("conversation_input"), "conversation_input")
    pid = str(row.get("pair_uid", ""))
    return [
        PairwisePreference(
            pid, prompt, [answer_of(row, "chosen"), answer_of(row, "reject")], 0, source=rmb_subset(row)
        )
    ]


def from_rmb_bon(row: dict) -> list[BestOfN]:
    """RMB best-of-n `{bon_uid, conversation_input, bon_best.answer, loser_list[].answer, category_path}`."""
    prompt = render_conversation(row.get("conversation_input"), "conversation_input")
    losers = row.get("loser_list")
    if not isinstance(losers, list) or not losers:
        raise RowProblem("loser_list", f"must be a non-empty list, got {losers!r:.80}")
    responses = [answer_of(row, "bon_best")] + [answer_of({"loser": x}, "loser") for x in losers]
    return [BestOfN(str(row.get("bon_uid", "")), prompt, responses, 0, source=rmb_subset(row))]


def from_rewardbench(row: dict) -> list[PairwisePreference]:
    """RewardBench `{id, prompt, chosen, rejected, subset}`."""
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
    """RLAIF-V chat messages `{prompt, chosen, rejected}` with image_url parts in `image/` or beside the file."""

    def convert(row: dict) -> list[PairwisePreference]:
        prompt, urls = message_text(row.get("prompt"), "prompt")
        chosen, _ = message_text(row.get("chosen"), "chosen")
        rejected, _ = message_text(row.get("rejected"), "rejected")
        images = []
        for url in urls:
            try:  # containment first: a path outside the folder is never even looked at
                candidates = [inside(url, folder / "image"), inside(url, folder)]
            except ImageError as e:
                raise RowProblem("prompt.image_url", str(e)) from None
            found = [p for p in candidates if p.is_file()]
            if not found:
                raise RowProblem(
                    "prompt.image_url", f"image {url!r} not found under {folder / 'image'} or {folder}"
                )
            images.append(str(found[0]))
        return [PairwisePreference(str(row.get("id", "")), prompt, [chosen, rejected], 0, images, "rlaifv")]

    return convert


FORMATS: dict[str, Callable[[dict], list]] = {
    "hh-rlhf": from_hh_rlhf,
    "llmbar": from_llmbar,
    "rm-bench": from_rm_bench,
    "rmb-pairwise": from_rmb_pairwise,
    "rmb-bon": from_rmb_bon,
    "rewardbench": from_rewardbench,
}


OTHER_FORMATS = {
    "rlaifv": rlaifv_loader.__doc__ or "",
    "generic": "any JSON / JSONL file through --map (rlhfv.data.mapping): prompt, a, b, label "
    "(annotator votes: label=f1+f2+f3, vote=majority|plurality) or chosen, rejected; images, subset, id",
    "jsonl": "rlhfv's own preference JSONL (rlhfv.data.preference): {id, prompt, images, responses, preferred}",
}


def describe_formats() -> dict[str, str]:
    """Every format name with the fields it reads (the first line of its converter's docstring)."""
    described = {name: (fn.__doc__ or "").strip().splitlines()[0] for name, fn in FORMATS.items()}
    return described | OTHER_FORMATS


def load_preference_data(
    fmt: str, path: str | Path, mapping: str | dict[str, Any] | None = None
) -> tuple[list, list[RowError]]:
    """Load `path` in format `fmt` (a name of `describe_formats()`); `mapping` is the generic
    format's field mapping (`rlhfv.data.mapping.parse_mapping`).

    Raises:
        ValueError: an unknown format, a mapping given to another format, or a bad mapping.
        FileNotFoundError: no such file.
    """
    if fmt not in FORMATS and fmt not in OTHER_FORMATS:
        raise ValueError(f"unknown data format {fmt!r}; known: {', '.join(describe_formats())}")
    if mapping and fmt != "generic":
        raise ValueError(f"a field mapping only applies to the 'generic' format, not {fmt!r}")
    if fmt == "generic":
        from rlhfv.data.mapping import load_generic

        return load_generic(path, mapping)
    if fmt == "rlaifv":
        return load_rows(path, rlaifv_loader(Path(path).parent))
    if fmt == "jsonl":
        from rlhfv.data.preference import read_preferences

        return read_preferences(path)
    rows, errors = load_rows(path, FORMATS[fmt])
    if fmt == "llmbar":  # the subset is the folder: llmbar/Natural/dataset.json → "Natural"
        for r in rows:  # every subset's file is dataset.json: the id needs the subset too
            r.source = r.source or Path(path).parent.name
            r.id = f"{r.source}/{r.id}"
    return rows, errors


SPLITS = ("all", "train", "test")


def select_rows(
    rows: list, split: str = "all", test_fraction: float = 0.2, limit: int = 0, seed: int = 0
) -> list:
    """A fixed train/test split of a file's prompts, then an optional random subsample of prompts.

    A prompt is a row of the file: the rows it gave (RM-Bench's nine style pairs) share their
    `line` and stay together, so a split never cuts a prompt in two and `limit` counts prompts
    (each RM-Bench difficulty keeps a third of the pairs). Rows without a `line` count alone.
    The split is a seeded permutation of prompts (seed 0, independent of `seed`), so the same
    file always splits the same way; `limit` then keeps that many prompts of the part, drawn with
    `seed`. Rows keep their file order.
    """
    import random

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    prompts: dict[Any, list[int]] = {}
    for i, r in enumerate(rows):
        prompts.setdefault(getattr(r, "line", 0) or f"row {i}", []).append(i)
    keep = list(prompts.values())
    if split != "all":
        order = keep[:]
        random.Random(0).shuffle(order)
        n_test = round(len(order) * test_fraction)
        keep = sorted(order[:n_test] if split == "test" else order[n_test:])
    if limit and limit < len(keep):
        keep = sorted(random.Random(seed).sample(keep, limit))
    return [rows[i] for group in keep for i in group]


class PreferenceData:
    """Preference items from any format above, images loaded: a recipe node for judge pipelines.

    Yields `rlhfv.types.PreferencePair`s (a best-of-n row gives one with n responses). Tied pairs
    (the generic format's label votes) carry no preference and are left out, counted in `ties`.

    Args:
        format: A `load_preference_data` format name ("hh-rlhf", "llmbar", "rlaifv", …).
        path: The data file.
        split: "all", or the "train" / "test" part of the file's fixed split (`select_rows`).
        test_fraction: Share of the prompts in the test part.
        limit: Keep a random subsample of this many prompts of the part, fixed by `seed` (0: all).
        seed: Seed of the subsample.
        mapping: The generic format's field mapping: a dict, `key=field,…` or a YAML file.
    """

    def __init__(
        self,
        format: str,
        path: ExistingPath,
        limit: int = 0,
        seed: int = 0,
        split: str = "all",
        test_fraction: float = 0.2,
        mapping: dict[str, Any] | str | None = None,
    ):
        from rlhfv.data.images import load_image
        from rlhfv.types import PreferencePair, Prompt

        rows, self.errors = load_preference_data(format, path, mapping)
        rows = select_rows(rows, split, test_fraction, limit, seed)
        self.ties = sum(r.preferred is None for r in rows)
        self.pairs = []
        for r in (r for r in rows if r.preferred is not None):
            try:
                images = [load_image(p) for p in r.images]
            except ImageError as e:  # one bad image loses its row, never the file
                self.errors.append(RowError(str(path), r.line, "images", str(e)))
                continue
            self.pairs.append(
                PreferencePair(Prompt(r.prompt, images), list(r.responses), r.preferred, r.id, r.source)
            )
        if self.ties:
            logger.info("%s: left out %d tied pairs", path, self.ties)
        if not self.pairs:
            raise ValueError(f"{path}: no usable preference items ({len(self.errors)} rows skipped)")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> Any:
        return self.pairs[index]
