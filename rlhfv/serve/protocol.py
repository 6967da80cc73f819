"""The GRM service's HTTP protocol: request bodies, the caps on them, and safe image decoding.

Every way a request can be wrong ends in a `RequestError` that names the field and becomes a 4xx
answer; nothing a client sends can raise anything else out of a handler.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

if TYPE_CHECKING:
    from PIL import Image


@dataclass
class Limits:
    """Caps on what one request may ask (`rlhfv serve grm --help` names the flags).

    Attributes:
        max_request_bytes: Body size; larger bodies get 413 before they are parsed.
        max_image_bytes: One image's encoded size (base64-decoded, or the file's size).
        max_image_pixels: One image's width × height, read from its header before decoding.
        max_images: Images per request.
        max_group: Completions in one grouped comparison (G; pairs grow as G²/2).
        max_responses: Responses in one pointwise request.
        max_votes: k of voting@k.
        max_queries: Queries in one OpenRLHF `/get_reward` request.
        request_timeout_s: A request still unanswered after this long gets 504.
    """

    max_request_bytes: int = 16 * 2**20
    max_image_bytes: int = 8 * 2**20
    max_image_pixels: int = 4096 * 4096
    max_images: int = 4
    max_group: int = 16
    max_responses: int = 16
    max_votes: int = 32
    max_queries: int = 256
    request_timeout_s: float = 120.0


class RequestError(Exception):
    """A request the server refuses: HTTP `status`, the offending `field`, and why."""

    def __init__(self, status: int, field: str, message: str):
        super().__init__(message)
        self.status, self.field, self.message = status, field, message


class ImageIn(BaseModel):
    """One image: base64 bytes (`data`) or a path under the server's `--image-root` (`path`)."""

    model_config = ConfigDict(extra="forbid")
    data: str | None = None
    path: str | None = None

    @model_validator(mode="after")
    def one_source(self) -> ImageIn:
        if (self.data is None) == (self.path is None):
            raise ValueError("give exactly one of 'data' (base64) or 'path' (under the server's image root)")
        return self


class PairRequest(BaseModel):
    """A pairwise judgement: response `a` against response `b` to `question`."""

    model_config = ConfigDict(extra="forbid")
    question: str
    a: str
    b: str
    images: list[ImageIn] = Field(default_factory=list)


class GroupRequest(BaseModel):
    """A grouped comparison (Generative RLHF-V): G completions to one question, each rewarded by
    its comparisons with the others. `complete` marks completions that ended by themselves
    (default: all); incomplete ones are never compared and get 0, as in-process."""

    model_config = ConfigDict(extra="forbid")
    question: str
    completions: list[str]
    complete: list[bool] | None = None
    images: list[ImageIn] = Field(default_factory=list)


class PointwiseRequest(BaseModel):
    """SPCT pointwise scores of n responses with voting@k; `seed` fixes the k display orders."""

    model_config = ConfigDict(extra="forbid")
    question: str
    responses: list[str]
    k: int = Field(default=1, ge=1)
    seed: int | None = None
    images: list[ImageIn] = Field(default_factory=list)


class OpenRLHFRequest(BaseModel):
    """OpenRLHF's remote reward model body (`openrlhf/cli/serve_rm.py`): `query` holds prompt +
    response as decoded by the policy's tokenizer; `prompts` the prompts; `labels` is ignored."""

    model_config = ConfigDict(extra="allow")
    query: list[str]
    prompts: list[str]


def parse_body(raw: bytes, model: type[BaseModel]) -> Any:
    """Validate a JSON body against `model`; RequestError (400 / 422) naming the field otherwise."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as e:
        first = e.errors()[0]
        if first["type"] == "json_invalid":
            raise RequestError(400, "body", f"body is not valid JSON: {first['msg']}") from None
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise RequestError(422, where, f"{where}: {first['msg']}") from None


def check_cap(count: int, cap: int, field: str, flag: str) -> None:
    """422 naming the field when `count` is over its cap (the server's `--flag`)."""
    if count > cap:
        raise RequestError(422, field, f"{field}: {count} given, the server's cap is {cap} ({flag})")


def decode_image(image: ImageIn, field: str, limits: Limits, root: Path | None) -> Image.Image:
    """One request image as RGB, within the caps; a path must stay inside `root`."""
    from PIL import Image

    from rlhfv.data.images import ImageError, inside

    if image.data is not None:
        if len(image.data) > limits.max_image_bytes * 4 // 3 + 4:  # base64 is 4/3 the bytes
            raise RequestError(
                413, field, f"{field}: image over {limits.max_image_bytes} bytes (--max-image-bytes)"
            )
        try:
            raw = base64.b64decode(image.data, validate=True)
        except (binascii.Error, ValueError) as e:
            raise RequestError(422, field, f"{field}.data: not base64 ({e})") from None
        source: Any = io.BytesIO(raw)
        size = len(raw)
    else:
        if root is None:
            raise RequestError(
                403, field, f"{field}.path: this server takes no image paths (start it with --image-root)"
            )
        try:
            path = inside(str(image.path), root)
        except ImageError:
            raise RequestError(
                403, field, f"{field}.path: {image.path!r} is outside the image root"
            ) from None
        if not path.is_file():
            raise RequestError(404, field, f"{field}.path: no image {image.path!r} under the image root")
        source, size = path, path.stat().st_size
    if size > limits.max_image_bytes:
        raise RequestError(
            413, field, f"{field}: image of {size} bytes, over {limits.max_image_bytes} (--max-image-bytes)"
        )
    try:
        with Image.open(source) as im:  # reads the header only
            w, h = im.size
            if w * h > limits.max_image_pixels:
                raise RequestError(
                    413,
                    field,
                    f"{field}: image is {w}x{h} pixels, over {limits.max_image_pixels} (--max-image-pixels)",
                )
            im.load()
            return im.convert("RGB")
    except RequestError:
        raise
    except Exception as e:  # PIL raises many types for broken or hostile files
        raise RequestError(422, field, f"{field}: not a readable image ({type(e).__name__})") from None


# Chat markup a policy's tokenizer leaves in OpenRLHF's decoded queries: role headers (ChatML,
# Llama 3, Gemma) and special tokens. The judge reads the plain question and response.
CHAT_MARKUP = re.compile(
    r"<\|im_start\|>(system|user|assistant)\n?|<\|start_header_id\|>\w+<\|end_header_id\|>\n*"
    r"|<start_of_turn>\w+\n?|<end_of_turn>\n?|<\|[^|<>\s]{1,40}\|>|</?s>"
)


def split_query(query: str, prompt: str, index: int) -> tuple[str, str]:
    """OpenRLHF's (query, prompt) → (question, response) as plain text.

    The query is the prompt followed by the response, both decoded with special tokens kept;
    the response is what follows the prompt, and chat markup is stripped from both.
    """
    if not query.startswith(prompt):
        raise RequestError(
            422,
            f"query.{index}",
            f"query.{index} does not start with prompts.{index} (OpenRLHF sends prompt + response)",
        )
    question = CHAT_MARKUP.sub("\n", prompt).strip()
    response = CHAT_MARKUP.sub("\n", query[len(prompt) :]).strip()
    return question, response
