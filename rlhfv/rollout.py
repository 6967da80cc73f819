"""Sampling B prompts × G completions from a policy, and the log-probabilities of completions.

A `Rollout` is prompt-major: completion k of prompt b is row b·G + k. Completions are
right-padded to the longest one ([N, T]); the mask marks each completion's tokens up to and
including the token that ended it (EOS, or the last token of a stop string). A completion that
reached `max_new_tokens` without ending is `complete = False`: the grouped-comparison reward gives
it 0, and the length limit, not the model, chose where it stops.

On-policy sampling: the sampler draws from softmax(logits / temperature) with the policy's
`suppressed_tokens` at probability 0 (then top-p, when below 1), and `sequence_logprobs` computes
the same distribution (without the top-p cut). Nothing comes from a checkpoint's
`generation_config.json`: a `repetition_penalty`, `no_repeat_ngram_size`, `min_new_tokens` or
`suppress_tokens` shipped with a model would make the sampler differ from the policy that GRPO's
ratio assumes. `Rollout.sampler_logprobs` keeps log π_sampler of every sampled token, so a
pipeline can measure the gap (`rollout/logprob_gap`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from rlhfv.models.base import ChatModel, checkpointing_active
from rlhfv.types import READING_SLOT, Prompt


@dataclass
class Rollout:
    """G sampled completions for each of B prompts (N = B·G rows, prompt-major).

    Attributes:
        prompts: The B prompts.
        labels: Reference answers of the prompts for rule rewards ([B]; "" where there is none).
        prompt_batch: Encoder output for the N rows (each prompt repeated G times): left-padded
            `input_ids` [N, P], `attention_mask` [N, P] and the vision tensors.
        completion_ids: Sampled tokens [N, T], padded after each completion's end.
        completion_mask: 1 for the completion's tokens [N, T].
        texts: Decoded completions [N] (special tokens and stop strings' tails removed).
        complete: Whether each completion ended by itself (EOS or stop string) [N] bool.
        group_size: G.
        judgments: Filled by judge-based rewards: per prompt, the pairwise verdicts
            `{"a": i, "b": j, "text": str, "scores": [sa, sb] | None}` (for the dashboard).
        reading: For prompts with a `Prompt.reading`: the rollout of those readings (row i's
            reading went into row i's prompt; `prompt_batch` holds the filled-in prompts). Its
            tokens are the first part of each row's output, and GRPO trains them with the rest.
        sampler_logprobs: log-probability of each sampled token under the distribution it was
            drawn from, after every logits processor [N, T] (0 where masked); None when greedy.
    """

    prompts: list[Prompt]
    labels: list[str]
    prompt_batch: dict[str, torch.Tensor]
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    texts: list[str]
    complete: torch.Tensor
    group_size: int
    judgments: list[list[dict[str, Any]]] = field(default_factory=list)
    reading: Rollout | None = None
    sampler_logprobs: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def select(self, rows: slice) -> dict[str, torch.Tensor]:
        """Prompt tensors of some rows (for micro-batching the training forward pass)."""
        return {k: _rows(k, v, rows, self.prompt_batch) for k, v in self.prompt_batch.items()}


def _rows(key: str, value: torch.Tensor, rows: slice, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Rows of one prompt tensor. Qwen2-VL style models flatten all images' patches into one
    [patches, D] tensor with a per-image grid [images, 3]; those are cut by patch counts."""
    n = batch["input_ids"].shape[0]
    if key == "pixel_values" and "image_grid_thw" in batch and value.shape[0] != n:
        grid = batch["image_grid_thw"]
        per_row = grid.shape[0] // n  # images per prompt (the same for every row of a batch)
        patches = grid.prod(dim=1).view(n, per_row).sum(dim=1)  # [N]
        starts = torch.cat([patches.new_zeros(1), patches.cumsum(0)])
        return value[int(starts[rows.start or 0]) : int(starts[rows.stop if rows.stop is not None else n])]
    if key == "image_grid_thw" and value.shape[0] != n:
        per_row = value.shape[0] // n
        start = (rows.start or 0) * per_row
        stop = (rows.stop if rows.stop is not None else n) * per_row
        return value[start:stop]
    return value[rows]


@torch.no_grad()
def generate(
    policy: ChatModel,
    prompts: Sequence[Prompt],
    group_size: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    stop_strings: Sequence[str] = (),
    labels: Sequence[str] | None = None,
    greedy: bool = False,
    synced_gpus: bool = False,
    allowed_tokens: Callable[[int, torch.Tensor], list[int]] | None = None,
    reading_tokens: int = 32,
    share_prefix: bool = True,
    prompt_seeds: Sequence[int] | None = None,
) -> Rollout:
    """Sample `group_size` completions for every prompt, batched, with the KV cache.

    Prompts with a `reading` are answered in two passes: first each row's reading (sampled like
    the rest, or greedy; greedy readings of the same reading prompt are generated once), which
    then fills the row's `READING_SLOT`, then the row itself.

    Args:
        policy: Any builder's ChatModel (text or vision-language).
        prompts: The B prompts (images travel inside them).
        group_size: G completions per prompt.
        max_new_tokens: Length limit; a completion that hits it is marked incomplete.
        temperature, top_p: Sampling settings (ignored when `greedy`).
        stop_strings: A completion also ends at the first of these strings.
        labels: Reference answers, one per prompt, passed on to rule rewards.
        greedy: Argmax decoding (evaluation).
        synced_gpus: Keep generating until every process is done (needed under ZeRO-3, where
            each forward pass gathers parameters from all processes).
        allowed_tokens: Constrained decoding: (row, ids generated so far [t]) → the token ids that
            may come next (e.g. `rlhfv.grm.judge.ScoreLineGrammar`).
        reading_tokens: Length limit of a reading.
        share_prefix: Encode the token prefix that every row shares (a judge's instructions)
            once and let the rows reuse its KV cache (`shared_prefix_batch`); text-only prompts.
        prompt_seeds: One seed per prompt: each row then samples with its own generator
            (`RowSeededSampler`), so a prompt's group does not depend on the other prompts of
            the batch (nor on how a batch is split over processes).
    """
    rows = [p for p in prompts for _ in range(group_size)]  # prompt-major: b·G + k
    reading = None
    if any(p.reading is not None for p in prompts):
        rows, reading = _read_first(policy, rows, reading_tokens, temperature, top_p, greedy, synced_gpus)
    device = next(policy.module.parameters()).device
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in policy.encoder(rows).items()}
    from transformers import GenerationConfig, GenerationMixin
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

    # Every setting that shapes the distribution is named here; temperature and top-p run as our
    # own processors so that the recorder after them sees exactly what was sampled from.
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=not greedy,
        eos_token_id=policy.eos_token_id,
        pad_token_id=policy.pad_token_id,
        use_cache=True,
        suppress_tokens=list(policy.suppressed_tokens) or None,
        stop_strings=list(stop_strings) or None,
    )
    processors: list[Any] = []
    recorder = None
    if not greedy:
        config.top_k = 0  # transformers' global default is 50
        processors.append(TemperatureLogitsWarper(temperature))
        if top_p < 1.0:
            processors.append(TopPLogitsWarper(top_p))
        recorder = SampledLogprobs()
        processors.append(recorder)
        if prompt_seeds is not None:  # after the recorder: it records the distribution, not the pick
            processors.append(
                RowSeededSampler([s * 1_009 + k for s in prompt_seeds for k in range(group_size)])
            )
    extra: dict[str, Any] = {"tokenizer": policy.tokenizer} if stop_strings else {}
    inputs = batch
    shared = shared_prefix_batch(policy, batch) if share_prefix else None
    if shared is not None:
        inputs, extra["cache"] = shared
    width = inputs["input_ids"].shape[1]
    if allowed_tokens is not None:
        extra["prefix_allowed_tokens_fn"] = lambda row, ids: allowed_tokens(row, ids[width:])
    # `generate` fills every setting its config leaves unset from the model's own config (the
    # checkpoint's generation_config.json); for the call, the model's own config is ours.
    models = [m for m in policy.module.modules() if isinstance(m, GenerationMixin)]
    saved = [m.generation_config for m in models]
    try:
        for m in models:
            m.generation_config = config
        out = policy.module.generate(
            **inputs,
            generation_config=config,
            logits_processor=processors,
            synced_gpus=synced_gpus,
            **extra,
        )
    finally:
        for m, own in zip(models, saved, strict=True):
            m.generation_config = own
    ids = out[:, width:]  # [N, T'] generated part, T' ≤ max_new_tokens
    sampler_logprobs = recorder.logprobs(ids) if recorder is not None else None  # [N, T'] or None
    ids, mask, complete = completion_ends(ids, policy, stop_strings, max_new_tokens)
    texts = [
        policy.tokenizer.decode(r[m.bool()].tolist(), skip_special_tokens=True)
        for r, m in zip(ids, mask, strict=True)
    ]
    if stop_strings:  # the stop string itself is part of the sampled tokens; its tail is not text
        texts = [_cut_at_stop(t, stop_strings) for t in texts]
    return Rollout(
        prompts=list(prompts),
        labels=list(labels) if labels is not None else [""] * len(prompts),
        prompt_batch=batch,
        completion_ids=ids,
        completion_mask=mask,
        texts=texts,
        complete=complete,
        group_size=group_size,
        reading=reading,
        sampler_logprobs=sampler_logprobs * mask if sampler_logprobs is not None else None,
    )


MIN_SHARED_PREFIX = 32  # tokens; below this, one more forward call costs more than it saves


@torch.no_grad()
def shared_prefix_batch(
    policy: ChatModel, batch: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], Any] | None:
    """The rows' common token prefix encoded once, and the batch rearranged to reuse it.

    A judge's rows share its instructions (~170 tokens of a ~250-token prompt); encoding them
    once instead of once per row cut the prompt work of a k-sample judgement about threefold.
    The rows (left-padded, [N, P]) become [shared prefix | padding | own suffix] ([N, L + W]),
    with the padding masked: `generate` takes position ids from the attention mask, so each
    token keeps the position it had, and it starts from the prefix's cache (repeated N times)
    and encodes only the suffixes. Returns None when there is nothing worth sharing (one row,
    images, or a common prefix under `MIN_SHARED_PREFIX` tokens).
    """
    from transformers import GenerationMixin

    ids, mask = batch["input_ids"], batch["attention_mask"]  # [N, P]
    if set(batch) != {"input_ids", "attention_mask"} or ids.shape[0] < 2:
        return None
    if not any(isinstance(m, GenerationMixin) for m in policy.module.modules()):
        return None  # a stand-in with its own generate (tests): no forward to encode the prefix with
    rows = [row[m.bool()] for row, m in zip(ids, mask, strict=True)]  # unpadded, each [P_i]
    shared = min(len(r) for r in rows) - 1  # every row keeps at least one token of its own
    for r in rows[1:]:
        differ = (r[:shared] != rows[0][:shared]).nonzero()
        if len(differ):
            shared = int(differ[0])
    if shared < MIN_SHARED_PREFIX:
        return None
    prefix = rows[0][:shared]
    out = policy.module(input_ids=prefix[None], attention_mask=torch.ones_like(prefix)[None], use_cache=True)
    cache = out.past_key_values
    if cache is None:  # a module that keeps no cache here (gradient checkpointing in training mode)
        return None
    cache.batch_repeat_interleave(len(rows))
    width = max(len(r) for r in rows) - shared
    new_ids = torch.full((len(rows), shared + width), policy.pad_token_id, dtype=ids.dtype, device=ids.device)
    new_mask = torch.zeros_like(new_ids, dtype=mask.dtype)
    new_ids[:, :shared], new_mask[:, :shared] = prefix, 1
    for i, r in enumerate(rows):
        new_ids[i, shared + width - (len(r) - shared) :] = r[shared:]
        new_mask[i, shared + width - (len(r) - shared) :] = 1
    return {"input_ids": new_ids, "attention_mask": new_mask}, cache


def rollout_of_groups(policy: ChatModel, picks: Sequence[tuple[Rollout, int]]) -> Rollout:
    """One rollout of chosen groups (rollout, prompt index b) of the same policy's rollouts, in
    order: DAPO's dynamic sampling gathers the groups worth training on from several rounds.

    The prompts are encoded again, since rounds differ in prompt width; completions are padded
    to the widest round.
    """
    if any(r.reading is not None for r, _ in picks):
        raise ValueError("rollouts with readings cannot be regrouped")
    g = picks[0][0].group_size
    rows = [(r, b * g + k) for r, b in picks for k in range(g)]  # N = len(picks)·G rows
    width = max(r.completion_ids.shape[1] for r, _ in picks)  # T

    def padded(tensors: list[torch.Tensor], value: float) -> torch.Tensor:  # [N, T]
        return torch.stack(
            [torch.nn.functional.pad(t, (0, width - t.shape[0]), value=value) for t in tensors]
        )

    device = picks[0][0].completion_ids.device
    encoded = policy.encoder([r.prompts[i // g] for r, i in rows])
    sampled = all(r.sampler_logprobs is not None for r, _ in picks)
    return Rollout(
        prompts=[r.prompts[b] for r, b in picks],
        labels=[r.labels[b] for r, b in picks],
        prompt_batch={k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in encoded.items()},
        completion_ids=padded([r.completion_ids[i] for r, i in rows], policy.pad_token_id),
        completion_mask=padded([r.completion_mask[i] for r, i in rows], 0),
        texts=[r.texts[i] for r, i in rows],
        complete=torch.stack([r.complete[i] for r, i in rows]),
        group_size=g,
        judgments=[r.judgments[b] if b < len(r.judgments) else [] for r, b in picks],
        sampler_logprobs=padded([r.sampler_logprobs[i] for r, i in rows], 0.0) if sampled else None,  # type: ignore[index]
    )


class RowSeededSampler:
    """The very last logits processor: draws each row's next token with the row's own
    `torch.Generator` and returns scores that leave `generate` no other choice (0 for the drawn
    token, −inf elsewhere), so its own multinomial over the batch, which uses the global RNG,
    picks exactly that token. A row's samples are then a function of its seed and its own logits.

    Cost: one small multinomial call per row and token, on top of generate's own; negligible
    beside the forward pass for small batches, a few percent for hundreds of rows.
    """

    def __init__(self, seeds: Sequence[int]):
        self.seeds = list(seeds)
        self.generators: list[torch.Generator] | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.generators is None:
            if len(self.seeds) != scores.shape[0]:
                raise ValueError(f"{len(self.seeds)} row seeds for {scores.shape[0]} rows")
            self.generators = [
                torch.Generator(device=scores.device).manual_seed(s % 2**63) for s in self.seeds
            ]
        probs = torch.softmax(scores.float(), dim=-1)  # [N, V]
        picked = torch.cat(
            [torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(self.generators)]
        )  # [N]
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(1, picked.unsqueeze(1), 0.0)
        return out


class SampledLogprobs:
    """The last logits processor of sampling: records log p(token) of each sampled token under
    the final scores it was drawn from.

    At step t it sees the scores [N, V] of token t but not yet the token; it keeps their
    log-softmax until step t+1, whose `input_ids` end with token t. The last token is read off
    after `generate` returns (`logprobs`). Memory is one [N, V] tensor, not T of them.
    """

    def __init__(self) -> None:
        self.previous: torch.Tensor | None = None  # [N, V]
        self.picked: list[torch.Tensor] = []  # T-1 tensors [N, 1]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.previous is not None:
            self.picked.append(self.previous.gather(1, input_ids[:, -1:]))
        self.previous = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def logprobs(self, ids: torch.Tensor) -> torch.Tensor | None:
        """log π_sampler of the generated tokens ids [N, T] → [N, T]; None when nothing was
        recorded (a stand-in module whose `generate` runs no logits processors)."""
        if self.previous is None:
            return None
        picked = [*self.picked, self.previous.gather(1, ids[:, -1:])]
        if len(picked) != ids.shape[1]:
            raise RuntimeError(f"recorded {len(picked)} sampling steps for {ids.shape[1]} generated tokens")
        return torch.cat(picked, dim=1).to(ids.device)


def _read_first(
    policy: ChatModel,
    rows: list[Prompt],
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    greedy: bool,
    synced_gpus: bool,
) -> tuple[list[Prompt], Rollout]:
    """Generate every row's reading and put it into the row's prompt (see `Prompt.reading`).

    Returns the filled rows and a rollout of the readings, one row per row (a reading prompt
    shared by several rows is generated once when greedy).
    """
    missing = [i for i, p in enumerate(rows) if p.reading is None]
    if missing:
        raise ValueError(
            f"rows {missing[:5]} have no Prompt.reading while others do; a batch reads first for all rows or none"
        )
    if greedy:  # one generation per distinct reading prompt, then one row per row
        distinct: dict[int, tuple[int, Prompt]] = {}
        for p in rows:
            distinct.setdefault(id(p.reading), (len(distinct), p.reading))  # type: ignore[arg-type]
        prompts = [r for _, r in distinct.values()]
        done = generate(policy, prompts, 1, max_new_tokens, greedy=True, synced_gpus=synced_gpus)
        pick = [distinct[id(p.reading)][0] for p in rows]
        index = torch.tensor(pick, device=done.completion_ids.device)
        readings = Rollout(
            prompts=[p.reading for p in rows],  # type: ignore[misc]
            labels=[""] * len(rows),
            prompt_batch={k: _take(k, v, pick, done.prompt_batch) for k, v in done.prompt_batch.items()},
            completion_ids=done.completion_ids[index],
            completion_mask=done.completion_mask[index],
            texts=[done.texts[i] for i in pick],
            complete=done.complete[index],
            group_size=1,
        )
    else:  # every row samples its own reading
        readings = generate(
            policy, [p.reading for p in rows], 1, max_new_tokens, temperature, top_p, synced_gpus=synced_gpus
        )
    filled = [
        replace(p, text=p.text.replace(READING_SLOT, text.strip()), reading=None)
        for p, text in zip(rows, readings.texts, strict=True)
    ]
    return filled, readings


def _take(key: str, value: torch.Tensor, pick: list[int], batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Rows `pick` (in that order, repeats allowed) of one prompt tensor (see `_rows`)."""
    return torch.cat([_rows(key, value, slice(i, i + 1), batch) for i in pick])


def completion_ends(
    ids: torch.Tensor, policy: ChatModel, stop_strings: Sequence[str], max_new_tokens: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Find where each sampled row ends; return (ids padded after the end, mask, complete).

    Shapes: ids [N, T] → ids [N, T], mask [N, T] (long), complete [N] (bool).
    """
    n, t = ids.shape
    is_eos = ids == policy.eos_token_id  # [N, T]
    has_eos = is_eos.any(dim=1)
    first_eos = torch.where(has_eos, is_eos.int().argmax(dim=1), torch.full((n,), t, device=ids.device))
    lengths = torch.where(has_eos, first_eos + 1, torch.full_like(first_eos, t))  # EOS is trained on too
    complete = has_eos.clone()
    if stop_strings:
        for i in torch.nonzero(~has_eos).flatten().tolist():
            end = _stop_string_end(ids[i].tolist(), policy.tokenizer, stop_strings)
            if end is not None:
                lengths[i], complete[i] = end, True
    if t < max_new_tokens:  # generation ended early for every row, so rows without EOS ended otherwise
        complete |= lengths < t
    positions = torch.arange(t, device=ids.device)
    mask = (positions[None, :] < lengths[:, None]).long()  # [N, T]
    ids = torch.where(mask.bool(), ids, torch.full_like(ids, policy.pad_token_id))
    return ids, mask, complete


def _stop_string_end(row: list[int], tokenizer: Any, stop_strings: Sequence[str]) -> int | None:
    """Number of tokens up to and including the one that completes the first stop string."""
    text = tokenizer.decode(row, skip_special_tokens=True)
    if not any(s in text for s in stop_strings):
        return None
    for end in range(1, len(row) + 1):
        if any(s in tokenizer.decode(row[:end], skip_special_tokens=True) for s in stop_strings):
            return end
    return None


def _cut_at_stop(text: str, stop_strings: Sequence[str]) -> str:
    cut = min((text.index(s) + len(s) for s in stop_strings if s in text), default=len(text))
    return text[:cut]


def sequence_logprobs(
    policy: ChatModel | torch.nn.Module,
    prompt_batch: dict[str, torch.Tensor],
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    temperature: float = 1.0,
    group_size: int = 1,
    suppressed_tokens: Sequence[int] | None = None,
    chunk_rows: int | None = None,
) -> torch.Tensor:
    """log π(token) of each completion token given the prompt and the tokens before it. [N, T].

    π is the distribution `generate` samples from: softmax(logits / temperature) with the
    `suppressed_tokens` at probability 0 (default: the ChatModel's own; pass them when `policy`
    is a bare module).

    Only the logits of the completion positions are computed (`logits_to_keep` where the model
    takes it), and the log-softmax is taken as gathered logit − logsumexp, so no [N, T, V]
    log-probability tensor is kept for backward. Masked positions give 0. The float32 logits
    exist for `chunk_rows` rows at a time (default: as many rows as fit in
    `LOGPROB_CHUNK_BYTES`), and under autograd each chunk is recomputed in backward rather than
    kept: backward holds the model's own logits, not also a float32 copy of them.

    With `group_size` G > 1 and rows that come in groups of G identical text-only prompts (a
    rollout's layout), each prompt is run once and its KV cache shared by its G completions:
    the prompt's share of the forward and backward work drops G-fold, with the same result. A
    module that is checkpointing its layers now keeps no KV cache, so it takes the plain path.
    """
    module = policy.module if isinstance(policy, ChatModel) else policy
    t = completion_ids.shape[1]
    attention = torch.cat(
        [prompt_batch["attention_mask"], completion_mask.to(prompt_batch["attention_mask"].dtype)], dim=1
    )  # [N, P+T]
    text_only = set(prompt_batch) == {"input_ids", "attention_mask"}
    if (
        group_size > 1
        and text_only
        and completion_ids.shape[0] % group_size == 0
        and _takes_logits_to_keep(module)
        and not checkpointing_active(module)
    ):
        logits = _shared_prompt_logits(module, prompt_batch, completion_ids, attention, group_size)
    else:
        input_ids = torch.cat([prompt_batch["input_ids"], completion_ids], dim=1)  # [N, P+T]
        vision = {k: v for k, v in prompt_batch.items() if k not in ("input_ids", "attention_mask")}
        if _takes_logits_to_keep(module):
            vision["logits_to_keep"] = t + 1
        logits = module(input_ids=input_ids, attention_mask=attention, use_cache=False, **vision).logits
        logits = logits[:, -t - 1 : -1, :]  # [N, T, V]: position t predicts token t
    if suppressed_tokens is None:
        suppressed_tokens = policy.suppressed_tokens if isinstance(policy, ChatModel) else ()
    suppressed = torch.tensor(list(suppressed_tokens), dtype=torch.long, device=logits.device)
    n, _, v = logits.shape
    rows = chunk_rows or max(1, LOGPROB_CHUNK_BYTES // (4 * max(t, 1) * v))
    recompute = torch.is_grad_enabled() and logits.requires_grad and rows < n
    chunks = []
    for lg, ids in zip(logits.split(rows), completion_ids.split(rows), strict=True):  # [n', T, V], [n', T]
        if recompute:  # backward keeps `lg` (a view of the model's logits), not the float32 copy
            chunks.append(checkpoint(_token_logprobs, lg, ids, suppressed, temperature, use_reentrant=False))
        else:
            chunks.append(_token_logprobs(lg, ids, suppressed, temperature))
    logprobs = torch.cat(chunks)  # [N, T]
    return torch.where(completion_mask.bool(), logprobs, torch.zeros_like(logprobs))  # pads may be -inf


# 256 MiB of float32 logits a chunk: 3 rows of 128 tokens at Qwen2.5's 151,936 tokens
LOGPROB_CHUNK_BYTES = 2**28


def _token_logprobs(
    logits: torch.Tensor, ids: torch.Tensor, suppressed: torch.Tensor, temperature: float
) -> torch.Tensor:
    """log softmax(logits / temperature)[token], suppressed tokens at -inf: [n, T, V], [n, T] → [n, T]."""
    logits = logits.float() / temperature  # a new tensor: the in-place fill below is safe for autograd
    if len(suppressed):
        logits.index_fill_(-1, suppressed, float("-inf"))
    picked = logits.gather(-1, ids.unsqueeze(-1)).squeeze(-1)  # [n, T]
    return picked - torch.logsumexp(logits, dim=-1)


def _shared_prompt_logits(
    module: torch.nn.Module,
    prompt_batch: dict[str, torch.Tensor],
    completion_ids: torch.Tensor,
    attention: torch.Tensor,
    group_size: int,
) -> torch.Tensor:
    """Logits [N, T, V] predicting each completion token, running each group's prompt once."""
    prompt_ids = prompt_batch["input_ids"][::group_size]  # [N/G, P]
    prompt_mask = prompt_batch["attention_mask"][::group_size]
    out = module(input_ids=prompt_ids, attention_mask=prompt_mask, use_cache=True, logits_to_keep=1)
    first = out.logits[:, -1:, :].repeat_interleave(group_size, dim=0)  # [N, 1, V]: predicts token 0
    cache = out.cache if hasattr(out, "cache") else out.past_key_values  # transformers ≥ 5.2 calls it `cache`
    cache.batch_repeat_interleave(group_size)  # [N/G, …] → [N, …]; gradients flow back to the prompt
    key = cache_keyword(module)
    rest = module(
        input_ids=completion_ids[:, :-1], attention_mask=attention[:, :-1], use_cache=True, **{key: cache}
    )
    return torch.cat([first, rest.logits], dim=1)  # [N, T, V]


def _forward_parameters(module: torch.nn.Module) -> Any:
    inner = getattr(module, "module", module)  # DeepSpeed engines wrap the model
    base = inner.get_base_model() if hasattr(inner, "get_base_model") else inner  # peft
    return inspect.signature(base.forward).parameters


def _takes_logits_to_keep(module: torch.nn.Module) -> bool:
    return "logits_to_keep" in _forward_parameters(module)


def cache_keyword(module: torch.nn.Module) -> str:
    """The keyword a transformers forward takes a KV cache by: `cache` since 5.2, `past_key_values` before."""
    return "cache" if "cache" in _forward_parameters(module) else "past_key_values"
