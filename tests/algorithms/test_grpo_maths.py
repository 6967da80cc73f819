import math

import pytest
import torch

from rlhfv.algorithms.grpo import GRPOLossConfig, group_advantages, grpo_loss
from rlhfv.algorithms.kl import k1, k3


def test_group_advantages_have_zero_mean_and_unit_std_per_group():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 3.0, 5.0, 4.0, 0.0])
    adv = group_advantages(rewards, group_size=4).view(2, 4)
    assert torch.allclose(adv.mean(dim=1), torch.zeros(2), atol=1e-6)
    assert torch.allclose(adv.std(dim=1), torch.ones(2), atol=1e-3)


def test_group_advantages_by_hand():
    # group [1, 0, 0, 1]: mean 0.5, sample std sqrt(1/3) = 0.57735 → ±0.866
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), group_size=4, eps=0.0)
    assert torch.allclose(adv, torch.tensor([0.8660, -0.8660, -0.8660, 0.8660]), atol=1e-4)


def test_a_group_of_equal_rewards_gives_zero_advantage_not_nan():
    adv = group_advantages(torch.tensor([2.0, 2.0, 2.0, 7.0, 9.0, 8.0]), group_size=3)
    assert torch.equal(adv[:3], torch.zeros(3))
    assert torch.isfinite(adv).all()


def test_dr_grpo_advantages_are_not_scaled_by_std():
    adv = group_advantages(torch.tensor([1.0, 3.0]), group_size=2, scale=False)
    assert torch.equal(adv, torch.tensor([-1.0, 1.0]))


def test_k3_is_zero_at_equality_positive_otherwise_and_matches_the_formula():
    lp = torch.tensor([[-1.0, -2.0]])
    ref = torch.tensor([[-1.0, -1.5]])
    kl = k3(lp, ref)
    # second token: r = exp(-1.5 + 2) = e^0.5; k3 = e^0.5 − 1 − 0.5 = 0.148721
    assert kl[0, 0].item() == 0.0
    assert kl[0, 1].item() == pytest.approx(math.exp(0.5) - 1.5, abs=1e-6)
    assert k1(lp, ref)[0, 1].item() == pytest.approx(-0.5)


def test_grpo_loss_on_policy_equals_minus_mean_advantage_per_token():
    # ratio 1 everywhere: loss = −Σ mask·A / tokens. Rows: A=+1 (3 tokens), A=−2 (1 token)
    # token_mean: −(3·1 + 1·(−2)) / 4 = −0.25;  sequence_mean: −(1 + (−2)) / 2 = 0.5
    lp = torch.zeros(2, 3)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    adv = torch.tensor([1.0, -2.0])
    loss, _ = grpo_loss(lp, lp, adv, mask, GRPOLossConfig(loss_norm="token_mean"))
    assert loss.item() == pytest.approx(-0.25)
    loss, _ = grpo_loss(lp, lp, adv, mask, GRPOLossConfig(loss_norm="sequence_mean"))
    assert loss.item() == pytest.approx(0.5)
    # constant (Dr. GRPO), max_len 5: −(3 − 2) / (2·5) = −0.1
    loss, _ = grpo_loss(lp, lp, adv, mask, GRPOLossConfig(loss_norm="constant", max_len=5))
    assert loss.item() == pytest.approx(-0.1)


def test_grpo_loss_gives_no_gradient_once_the_ratio_is_clipped():
    # A > 0 and ratio 1.5 > 1 + ε: min picks the clipped (constant) term
    old = torch.zeros(1, 2)
    lp = torch.tensor([[math.log(1.5), 0.0]], requires_grad=True)
    loss, metrics = grpo_loss(lp, old, torch.tensor([1.0]), torch.ones(1, 2), GRPOLossConfig(clip_eps=0.2))
    loss.backward()
    assert lp.grad[0, 0].item() == 0.0
    assert lp.grad[0, 1].item() == pytest.approx(-0.5)  # unclipped token: −A·ratio/2 tokens
    assert metrics["loss/clip_frac"] == pytest.approx(0.5)


def test_grpo_loss_keeps_gradient_when_the_clip_would_not_help_a_negative_advantage():
    # A < 0 and ratio 1.5: min(−1.5, −1.2) = −1.5 is unclipped, so the gradient stays
    lp = torch.tensor([[math.log(1.5)]], requires_grad=True)
    loss, _ = grpo_loss(lp, torch.zeros(1, 1), torch.tensor([-1.0]), torch.ones(1, 1), GRPOLossConfig())
    loss.backward()
    assert lp.grad[0, 0].item() == pytest.approx(1.5)


def test_clip_frac_counts_exactly_the_tokens_whose_gradient_the_clip_removed():
    # ratio 1.5 with A < 0 keeps its gradient (previous test): not clipped
    _, metrics = grpo_loss(torch.tensor([[math.log(1.5)]]), torch.zeros(1, 1), torch.tensor([-1.0]),
                           torch.ones(1, 1), GRPOLossConfig())  # fmt: skip
    assert metrics["loss/clip_frac"] == 0.0
    # random ratios: the clipped share is the share of masked tokens autograd gives no gradient
    torch.manual_seed(0)
    lp = (0.5 * torch.randn(6, 7)).requires_grad_()
    old, mask = torch.zeros(6, 7), (torch.rand(6, 7) > 0.3).float()
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5, 2.0, -2.0])
    loss, metrics = grpo_loss(lp, old, adv, mask, GRPOLossConfig())
    loss.backward()
    no_grad = ((lp.grad == 0).float() * mask).sum() / mask.sum()
    assert 0 < no_grad < 1 and metrics["loss/clip_frac"] == pytest.approx(no_grad.item())
    # micro-batches: their fractions add up to the whole batch's (the pipeline sums them)
    parts = [
        grpo_loss(lp[i : i + 2], old[i : i + 2], adv[i : i + 2], mask[i : i + 2], GRPOLossConfig(), None,
                  mask.sum().item(), 6)[1]["loss/clip_frac"]
        for i in (0, 2, 4)
    ]  # fmt: skip
    assert sum(parts) == pytest.approx(metrics["loss/clip_frac"])


def test_masked_tokens_do_not_change_the_loss_or_get_gradient():
    lp = torch.randn(2, 4, requires_grad=True)
    old = lp.detach() + 0.1 * torch.randn(2, 4)
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]])
    adv = torch.tensor([0.7, -1.3])
    loss, _ = grpo_loss(lp, old, adv, mask, GRPOLossConfig(kl_coef=0.1), ref_logprobs=old)
    loss.backward()
    assert torch.equal(lp.grad * (1 - mask), torch.zeros(2, 4))
    garbage = old.clone()
    garbage[mask == 0] = 1e4
    loss2, _ = grpo_loss(lp, garbage, adv, mask, GRPOLossConfig(kl_coef=0.1), ref_logprobs=garbage)
    assert loss2.item() == pytest.approx(loss.item(), rel=1e-6)


def test_kl_term_adds_beta_times_k3_token_mean():
    lp = torch.tensor([[-1.0, -2.0]])
    ref = torch.tensor([[-1.0, -1.5]])
    cfg = GRPOLossConfig(kl_coef=0.5)
    loss, metrics = grpo_loss(lp, lp, torch.tensor([0.0]), torch.ones(1, 2), cfg, ref_logprobs=ref)
    expected_kl = (0.0 + math.exp(0.5) - 1.5) / 2
    assert metrics["loss/kl"] == pytest.approx(expected_kl, abs=1e-6)
    assert loss.item() == pytest.approx(0.5 * expected_kl, abs=1e-6)


def test_micro_batch_losses_add_up_to_the_full_batch_loss():
    torch.manual_seed(0)
    lp, old = torch.randn(4, 5), torch.randn(4, 5)
    mask = (torch.rand(4, 5) > 0.3).float()
    adv = torch.randn(4)
    for norm in ("token_mean", "sequence_mean", "constant"):
        cfg = GRPOLossConfig(loss_norm=norm, max_len=5)
        full, _ = grpo_loss(lp, old, adv, mask, cfg)
        tokens, seqs = mask.sum().item(), 4
        parts = [
            grpo_loss(
                lp[i : i + 2], old[i : i + 2], adv[i : i + 2], mask[i : i + 2], cfg, None, tokens, seqs
            )[0]
            for i in (0, 2)
        ]
        assert sum(p.item() for p in parts) == pytest.approx(full.item(), rel=1e-5), norm


def test_unknown_loss_norm_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="token_mean"):
        GRPOLossConfig(loss_norm="mean")
