"""The common multimodal row schemas, read without custom code: one row in, prompt parts out.

Each schema turns one row (a dict, as `datasets` yields it with images left undecoded) into a
`RowExample` (a prompt, with the SFT answer when the row has one) or a `RowPair` (a prompt and two
responses). Images stay raw here (`{"bytes", "path"}` dicts, paths, PIL images); the data set
that holds the rows decodes them when a row is read (`rlhfv.data.hub_data`).

Example schemas (prompts and SFT rows):
- `messages`: TRL conversational, `{messages: [{role, content}], images: [...]}`; content is a
  string or typed parts (`{"type": "image"}`, `{"type": "text", "text": …}`).
- `conversations`: LLaVA JSON `{image, conversations: [{from: human|gpt, value: "<image>\\n…"}]}`
  and ShareGPT (`from`/`value` or `role`/`content`, optional `images`).
- `prompt`: `{prompt | question, answer | completion | solution, image(s), label}`; `prompt` may
  be TRL's prompt-only message list.

Pair schemas (preference pairs; the first response is the preferred one unless a label says):
- `trl-preference`: `{prompt?, chosen, rejected, images}` with chosen/rejected as message lists;
  without `prompt` the shared leading messages are the prompt (TRL's implicit prompt).
- `rlaif-v`: `{question | prompt, chosen, rejected, image}` with plain-text responses (RLAIF-V,
  and the text-only `{prompt, chosen, rejected}` shape).
- `vlfeedback`: `{prompt, completions: [{response, annotations: {aspect: {Rating}}}], image}`:
  the completion with the highest mean rating against the one with the lowest.
- `generic`: any row through a field mapping (`rlhfv.data.mapping`).

In messages the `<image>` marker is removed from the text: the prompt encoder puts a row's images
before its text in the family's own format.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rlhfv.data.preference import RowProblem

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant"}
ROLES["system"] = "system"
IMAGE_MARKER = re.compile(r"<image>\n?")


@dataclass
class RowExample:
    """A prompt (text, raw images, optional system message) and the answer where the row has one."""

    text: str
    images: list[Any]
    answer: str = ""
    system: str | None = None
    label: str = ""


@dataclass
class RowPair:
    """A prompt and two responses; `preferred` indexes the better one (None: a tie)."""

    text: str
    images: list[Any]
    responses: list[str]
    preferred: int | None = 0
    system: str | None = None
    id: str = ""
    source: str = ""
    answers: list[str] = field(default_factory=list)


def row_images(row: dict) -> list[Any]:
    """The row's images: an `images` list, or a single `image` (absent or None: none)."""
    value = row.get("images", row.get("image"))
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def turns_of(messages: Any, name: str) -> list[tuple[str, str]]:
    """(role, text) per message of TRL / LLaVA / ShareGPT messages, image markers and parts dropped."""
    if not isinstance(messages, list) or not messages:
        raise RowProblem(name, f"must be a non-empty list of messages, got {messages!r:.80}")
    turns = []
    for i, m in enumerate(messages):
        role = m.get("role", m.get("from")) if isinstance(m, dict) else None
        content = m.get("content", m.get("value")) if isinstance(m, dict) else None
        if role not in ROLES:
            raise RowProblem(f"{name}[{i}]", f"role must be one of {sorted(ROLES)}, got {role!r:.40}")
        if isinstance(content, list):  # typed parts: keep the text, the images come from the row
            content = "".join(
                p.get("text") or "" for p in content if isinstance(p, dict) and p.get("type") == "text"
            )
        if not isinstance(content, str):
            raise RowProblem(
                f"{name}[{i}]", f"content must be a string or a list of parts, got {content!r:.80}"
            )
        turns.append((ROLES[role], IMAGE_MARKER.sub("", content).strip()))
    return turns


def render_turns(turns: list[tuple[str, str]]) -> str:
    """A conversation as one user turn's text (a single user turn is just its text)."""
    if len(turns) == 1:
        return turns[0][1]
    return "\n\n".join(f"{role.capitalize()}: {text}" for role, text in turns)


def split_prompt(turns: list[tuple[str, str]], name: str) -> tuple[str | None, str]:
    """(system message, prompt text) of the turns before the answer."""
    system = turns[0][1] if turns and turns[0][0] == "system" else None
    turns = turns[1:] if system is not None else turns
    if not turns or not any(t for _, t in turns):
        raise RowProblem(name, "has no user text before the answer")
    return system, render_turns(turns)


def from_messages(row: dict, column: str = "messages") -> RowExample:
    """TRL conversational / LLaVA / ShareGPT: the last assistant message is the answer."""
    turns = turns_of(row.get(column), column)
    answer = ""
    if turns[-1][0] == "assistant":
        answer, turns = turns[-1][1], turns[:-1]
    system, text = split_prompt(turns, column)
    return RowExample(text, row_images(row), answer, system, str(row.get("label") or ""))


def text_or_messages(value: Any, name: str) -> tuple[str | None, str]:
    """A plain string, or a message list rendered (system message apart)."""
    if isinstance(value, str) and value.strip():
        return None, IMAGE_MARKER.sub("", value).strip()
    if isinstance(value, list):
        return split_prompt(turns_of(value, name), name)
    raise RowProblem(name, f"must be a non-empty string or a list of messages, got {value!r:.80}")


def reply_text(value: Any, name: str) -> str:
    """A response: a string, or the last message of a message list."""
    if isinstance(value, list):
        turns = turns_of(value, name)
        if turns[-1][0] != "assistant" or not turns[-1][1]:
            raise RowProblem(name, "the last message must be a non-empty assistant message")
        return turns[-1][1]
    if isinstance(value, str) and value.strip():
        return value
    raise RowProblem(name, f"must be a non-empty string or a list of messages, got {value!r:.80}")


ANSWER_COLUMNS = ("answer", "completion", "solution", "response")


def from_prompt(row: dict) -> RowExample:
    """`{prompt | question, answer | completion | solution | response, image(s), label}`."""
    name = "prompt" if "prompt" in row else "question"
    system, text = text_or_messages(row.get(name), name)
    column = next((c for c in ANSWER_COLUMNS if row.get(c) is not None), None)
    answer = reply_text(row[column], column) if column else ""
    return RowExample(text, row_images(row), answer, system, str(row.get("label") or ""))


def from_trl_preference(row: dict) -> RowPair:
    """TRL preference: chosen/rejected message lists, explicit `prompt` or the shared prefix."""
    if row.get("prompt") is not None:
        system, text = text_or_messages(row["prompt"], "prompt")
        responses = [reply_text(row.get("chosen"), "chosen"), reply_text(row.get("rejected"), "rejected")]
        return RowPair(text, row_images(row), responses, 0, system, str(row.get("id") or ""))
    chosen, rejected = turns_of(row.get("chosen"), "chosen"), turns_of(row.get("rejected"), "rejected")
    shared = 0
    while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
        shared += 1
    if shared == 0:
        raise RowProblem("chosen", "chosen and rejected share no leading messages to use as the prompt")
    responses = [reply_text([{"role": r, "content": t} for r, t in side[shared:]], name)
                 for side, name in ((chosen, "chosen"), (rejected, "rejected"))]  # fmt: skip
    system, text = split_prompt(chosen[:shared], "chosen")
    return RowPair(text, row_images(row), responses, 0, system, str(row.get("id") or ""))


def from_rlaif_v(row: dict) -> RowPair:
    """RLAIF-V `{question, chosen, rejected, image}` (or `prompt` for `question`), plain text."""
    name = "question" if "question" in row else "prompt"
    system, text = text_or_messages(row.get(name), name)
    responses = [reply_text(row.get("chosen"), "chosen"), reply_text(row.get("rejected"), "rejected")]
    pid = str(row.get("idx") if row.get("idx") is not None else row.get("id") or "")
    return RowPair(text, row_images(row), responses, 0, system, pid, str(row.get("ds_name") or ""))


def mean_rating(completion: Any, i: int) -> float:
    annotations = completion.get("annotations") if isinstance(completion, dict) else None
    if not isinstance(annotations, dict):
        raise RowProblem(f"completions[{i}].annotations", f"must be an object, got {annotations!r:.60}")
    ratings = []
    for aspect in annotations.values():
        rating = aspect.get("Rating") if isinstance(aspect, dict) else None
        try:
            ratings.append(float(rating))
        except (TypeError, ValueError):
            continue  # "N/A": that aspect did not apply
    if not ratings:
        raise RowProblem(f"completions[{i}].annotations", "has no numeric Rating")
    return sum(ratings) / len(ratings)


def from_vlfeedback(row: dict) -> RowPair:
    """VLFeedback: the best-rated completion (mean over aspects) against the worst-rated one."""
    completions = row.get("completions")
    if not isinstance(completions, list) or len(completions) < 2:
        raise RowProblem("completions", f"needs at least two completions, got {completions!r:.80}")
    rated = sorted(((mean_rating(c, i), i) for i, c in enumerate(completions)), reverse=True)
    (best, b), (worst, w) = rated[0], rated[-1]
    if best == worst:
        raise RowProblem("completions", "every completion has the same rating: no preference")
    responses = [reply_text(completions[b].get("response"), f"completions[{b}].response"),
                 reply_text(completions[w].get("response"), f"completions[{w}].response")]  # fmt: skip
    system, text = text_or_messages(row.get("prompt"), "prompt")
    return RowPair(text, row_images(row), responses, 0, system, str(row.get("id") or ""))


def generic_pair(mapping: dict[str, Any]) -> Callable[[dict], RowPair]:
    """A row through a checked field mapping (`rlhfv.data.mapping.parse_mapping`); images raw."""
    from rlhfv.data.mapping import get_path, mapped_converter

    text_mapping = {k: v for k, v in mapping.items() if k != "images"}
    convert = mapped_converter(text_mapping, folder=None)  # type: ignore[arg-type]  # no paths in it

    def pair(row: dict) -> RowPair:
        (p,) = convert(row)
        if p.preferred is None:
            raise RowProblem("+".join(mapping["label"]), "the votes tie: no preferred response")
        raw = get_path(row, mapping["images"]) if "images" in mapping else None
        images = [] if raw is None else list(raw) if isinstance(raw, list | tuple) else [raw]
        return RowPair(p.prompt, images, list(p.responses), p.preferred, None, p.id, p.source)

    return pair


EXAMPLE_KEYS = ("prompt", "answer", "images", "label", "system")


def generic_example(mapping: dict[str, Any]) -> Callable[[dict], RowExample]:
    """A row through `{prompt: field, answer: field, images: field, label: field, system: field}`
    (dots reach into nested objects, as in `rlhfv.data.mapping`)."""
    from rlhfv.data.mapping import get_path, unknown_key_message

    for key in mapping:
        if key not in EXAMPLE_KEYS:
            raise ValueError(f"mapping: {unknown_key_message(key, EXAMPLE_KEYS, 'example mapping')}")

    def example(row: dict) -> RowExample:
        values = {k: get_path(row, f) for k, f in mapping.items()}
        fields = {k: mapping.get(k, k) for k in EXAMPLE_KEYS}
        system, text = text_or_messages(values.get("prompt", row.get("prompt")), fields["prompt"])
        answer = values.get("answer")
        answer = reply_text(answer, fields["answer"]) if answer is not None else ""
        raw = values.get("images") if "images" in mapping else row.get("images", row.get("image"))
        images = [] if raw is None else list(raw) if isinstance(raw, list | tuple) else [raw]
        return RowExample(
            text, images, answer, values.get("system") or system, str(values.get("label") or "")
        )

    return example


# Schema name -> (converter, the columns it needs: each entry is one column or alternatives).
EXAMPLE_SCHEMAS: dict[str, tuple[Callable[[dict], RowExample], tuple[tuple[str, ...], ...]]] = {
    "messages": (from_messages, (("messages",),)),
    "conversations": (lambda row: from_messages(row, "conversations"), (("conversations",),)),
    "prompt": (from_prompt, (("prompt", "question"),)),
}
PAIR_SCHEMAS: dict[str, tuple[Callable[[dict], RowPair], tuple[tuple[str, ...], ...]]] = {
    "trl-preference": (from_trl_preference, (("chosen",), ("rejected",))),
    "rlaif-v": (from_rlaif_v, (("question", "prompt"), ("chosen",), ("rejected",))),
    "vlfeedback": (from_vlfeedback, (("prompt",), ("completions",))),
}


def detect_schema(columns: list[str], first: dict | None, pairs: bool) -> str:
    """The schema a data set's columns (and first row, to tell message lists from strings) fit.

    Raises:
        ValueError: no schema fits; the message lists the columns each schema needs.
    """
    has = set(columns)
    if pairs:
        if "completions" in has:
            return "vlfeedback"
        if {"chosen", "rejected"} <= has:
            plain = first is not None and isinstance(first.get("chosen"), str)
            return "rlaif-v" if plain and has & {"question", "prompt"} else "trl-preference"
        known = PAIR_SCHEMAS
    else:
        for name in ("messages", "conversations"):
            if name in has:
                return name
        if has & {"prompt", "question"}:
            return "prompt"
        known = EXAMPLE_SCHEMAS
    needs = "; ".join(f"{n}: {' + '.join('|'.join(c) for c in cols)}" for n, (_, cols) in known.items())
    raise ValueError(f"no schema fits the columns {sorted(has)} (schemas and the columns they need: {needs}); "
                     "name the columns with `mapping`")  # fmt: skip
