"""The meta-RM learns which judgements are correct (BCE on the judge's own samples)."""

from __future__ import annotations

import pytest
import torch

from rlhfv.grm.meta_rm import MetaRM, load_meta_rm, meta_rm_loss, meta_rm_scores, save_meta_rm
from rlhfv.models.text_lm import tiny_text_lm
from rlhfv.types import Prompt


@pytest.mark.slow
def test_meta_rm_fits_correctness_labels_and_round_trips(tmp_path):
    torch.manual_seed(0)
    meta = MetaRM(tiny_text_lm(seed=2))
    prompts = [Prompt("which response is better?")] * 4
    judgements = [
        "Scores: \\boxed{3, 7}",
        "Scores: \\boxed{7, 3}",
        "the red one \\boxed{2, 9}",
        "blue \\boxed{9, 2}",
    ]
    correct = [True, False, True, False]
    optimizer = torch.optim.AdamW(meta.parameters(), lr=1e-2)
    first = None
    for _ in range(25):
        loss, metrics = meta_rm_loss(meta, prompts, judgements, correct)
        first = first if first is not None else metrics["loss/meta_rm"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert first == torch.log(torch.tensor(2.0)).item()  # zero-initialised head: p = ½ for every sample
    assert metrics["loss/meta_rm"] < 0.3 * first and metrics["meta_rm/accuracy"] == 1.0
    scores = meta_rm_scores(meta, prompts, judgements, batch_size=3)
    assert scores[0] > 0 > scores[1]
    save_meta_rm(meta, tmp_path / "meta")
    again = meta_rm_scores(load_meta_rm(str(tmp_path / "meta")), prompts, judgements)
    assert torch.allclose(torch.tensor(again), torch.tensor(scores), atol=1e-5)


def test_scoring_with_the_shared_prefix_encoded_once_gives_the_same_logits():
    torch.manual_seed(0)
    meta = MetaRM(tiny_text_lm(seed=3)).eval()
    torch.nn.init.normal_(meta.head.weight)  # a head that reads the hidden state, not zeros
    instructions = "Judge the two responses below with care and give each a score. " * 3
    prompts = [Prompt(instructions + f"Question {i}: which is larger, {i} or {i + 7}?") for i in range(3)]
    prompts += prompts[:2]  # two items judged twice, with different judgements
    judgements = [
        "Scores: \\boxed{3, 7}",
        "ok \\boxed{7, 3}",
        "x",
        "a much longer analysis \\boxed{2, 9}",
        "b",
    ]
    encoded_once = []  # what the shared path returned: None would mean it fell back to the whole forward
    share = meta.shared_prefix_last_hidden
    meta.shared_prefix_last_hidden = lambda ids, mask: (
        encoded_once.append(share(ids, mask)) or encoded_once[-1]
    )
    with torch.no_grad():
        whole = meta(prompts, judgements)
        shared = meta(prompts, judgements, share_prefix=True)
    assert len(encoded_once) == 1 and encoded_once[0] is not None
    assert torch.allclose(shared, whole, atol=1e-4) and whole.abs().min() > 1e-3
    assert meta_rm_scores(meta, prompts, judgements, batch_size=5) == pytest.approx(whole.tolist(), abs=1e-4)
