"""The meta reward model of SPCT (arXiv 2504.02495, §4): which of the judge's samples to trust.

A scalar head on a language model reads the judge prompt (question + responses) followed by one
sampled judgement (criteria + analysis + scores) and predicts whether that judgement is correct
(SPCT Eq. 10). It is trained with binary cross-entropy on the judge's own samples; at inference
it ranks the k samples so that only the top k_meta vote (`rlhfv.grm.voting.meta_vote`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from rlhfv.models.base import ChatModel
from rlhfv.types import Prompt

HEAD_FILE = "meta_rm_head.safetensors"


class MetaRM(nn.Module):
    """A language model's last hidden state at the judgement's final token → one logit."""

    def __init__(self, lm: ChatModel):
        super().__init__()
        self.lm = lm
        self.backbone = lm.module
        hidden = self.backbone.config.get_text_config().hidden_size
        self.head = nn.Linear(hidden, 1)
        nn.init.zeros_(self.head.weight)  # start undecided: every logit 0, probability ½
        nn.init.zeros_(self.head.bias)

    def forward(
        self, prompts: Sequence[Prompt], judgements: Sequence[str], share_prefix: bool = False
    ) -> torch.Tensor:
        """Logit that each judgement is correct. Shape [N].

        `share_prefix` (scoring without gradients): the token prefix every row shares (the judge
        instructions, or a whole prompt for k judgements of one item) is encoded once and its cache
        reused by every row, as `rlhfv.rollout.generate` does.
        """
        from rlhfv.training.batching import tokenize_completions

        device = self.head.weight.device
        batch = {k: v.to(device) for k, v in self.lm.encoder(list(prompts)).items()}  # left-padded [N, P]
        ids, mask = tokenize_completions(self.lm, judgements)  # right-padded [N, T], eos appended
        ids = torch.cat([batch.pop("input_ids"), ids.to(device)], dim=1)  # [N, P+T]
        mask = torch.cat([batch.pop("attention_mask"), mask.to(device)], dim=1)
        vision = batch  # what the encoder gave besides the text (pixel values …)
        if share_prefix and not vision and not torch.is_grad_enabled():
            hidden = self.shared_prefix_last_hidden(ids, mask)
            if hidden is not None:
                return self.head(hidden.float()).squeeze(-1)
        out = self.backbone(input_ids=ids, attention_mask=mask, output_hidden_states=True, **vision)
        last = mask.shape[1] - 1 - mask.flip(1).argmax(dim=1)  # [N] index of each row's eos
        hidden = out.hidden_states[-1][torch.arange(len(last), device=device), last]  # [N, H]
        return self.head(hidden.float()).squeeze(-1)

    def shared_prefix_last_hidden(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
        """Each row's last hidden state [N, H], the rows' common prefix encoded once; None when
        there is too little to share (`rlhfv.rollout.shared_prefix_batch`)."""
        from rlhfv.rollout import cache_keyword, shared_prefix_batch

        rows = [row[m.bool()] for row, m in zip(ids, mask, strict=True)]  # unpadded [L_i]
        width = max(len(r) for r in rows)
        left = torch.full((len(rows), width), self.lm.pad_token_id, dtype=ids.dtype, device=ids.device)
        left_mask = torch.zeros_like(left, dtype=mask.dtype)
        for i, r in enumerate(rows):  # left-padded: every row ends in the last column
            left[i, width - len(r) :], left_mask[i, width - len(r) :] = r, 1
        packed = shared_prefix_batch(self.lm, {"input_ids": left, "attention_mask": left_mask})
        if packed is None:
            return None
        batch, cache = packed
        start = cache.get_seq_length()  # the prefix's tokens, already in the cache
        positions = (batch["attention_mask"].cumsum(dim=1) - 1).clamp(min=0)
        out = self.backbone(
            input_ids=batch["input_ids"][:, start:],
            attention_mask=batch["attention_mask"],
            position_ids=positions[:, start:],
            output_hidden_states=True,
            **{cache_keyword(self.backbone): cache},
        )
        return out.hidden_states[-1][:, -1]


def meta_rm_loss(
    meta: MetaRM, prompts: Sequence[Prompt], judgements: Sequence[str], correct: Sequence[bool]
) -> tuple[torch.Tensor, dict[str, float]]:
    """Binary cross-entropy against Eq.-10 correctness labels; metrics include accuracy."""
    logits = meta(prompts, judgements)  # [N]
    labels = torch.tensor([float(c) for c in correct], device=logits.device)
    loss = nn.functional.binary_cross_entropy_with_logits(logits, labels)
    accuracy = ((logits > 0).float() == labels).float().mean()
    return loss, {"loss/meta_rm": loss.item(), "meta_rm/accuracy": accuracy.item()}


@torch.no_grad()
def meta_rm_scores(
    meta: MetaRM, prompts: Sequence[Prompt], judgements: Sequence[str], batch_size: int = 8
) -> list[float]:
    """Meta-RM logits for many judgements, in batches, each batch's shared prefix encoded once."""
    meta.eval()
    out: list[float] = []
    for i in range(0, len(judgements), batch_size):
        out += meta(prompts[i : i + batch_size], judgements[i : i + batch_size], share_prefix=True).tolist()
    return out


def save_meta_rm(meta: MetaRM, path: str | Path) -> None:
    """The language model as an rlhfv model folder, plus the head's weights."""
    from safetensors.torch import save_file

    from rlhfv.models.base import save_model

    path = Path(path)
    save_model(meta.lm, path)
    save_file({k: v.contiguous() for k, v in meta.head.state_dict().items()}, str(path / HEAD_FILE))
    (path / "meta_rm.json").write_text(json.dumps({"head": HEAD_FILE}))


def load_meta_rm(path: str, dtype: str = "float32") -> MetaRM:
    from safetensors.torch import load_file

    from rlhfv.models.base import load_model

    head_path = Path(path) / HEAD_FILE
    if not head_path.is_file():
        raise FileNotFoundError(f"{path} is not a meta-RM folder (no {HEAD_FILE})")
    meta = MetaRM(load_model(path, dtype=dtype))
    meta.head.load_state_dict(load_file(str(head_path)))
    return meta
