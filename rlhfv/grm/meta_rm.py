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

    def forward(self, prompts: Sequence[Prompt], judgements: Sequence[str]) -> torch.Tensor:
        """Logit that each judgement is correct. Shape [N]."""
        from rlhfv.training.batching import tokenize_completions

        device = self.head.weight.device
        batch = {k: v.to(device) for k, v in self.lm.encoder(list(prompts)).items()}  # left-padded [N, P]
        ids, mask = tokenize_completions(self.lm, judgements)  # right-padded [N, T], eos appended
        ids, mask = ids.to(device), mask.to(device)
        vision = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask")}
        out = self.backbone(
            input_ids=torch.cat([batch["input_ids"], ids], dim=1),  # [N, P+T]
            attention_mask=torch.cat([batch["attention_mask"], mask], dim=1),
            output_hidden_states=True,
            **vision,
        )
        last = batch["input_ids"].shape[1] + mask.sum(dim=1) - 1  # [N] index of each row's eos
        hidden = out.hidden_states[-1][torch.arange(len(last), device=device), last]  # [N, H]
        return self.head(hidden.float()).squeeze(-1)


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
    """Meta-RM logits for many judgements, in batches."""
    meta.eval()
    out: list[float] = []
    for i in range(0, len(judgements), batch_size):
        out += meta(prompts[i : i + batch_size], judgements[i : i + batch_size]).tolist()
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
