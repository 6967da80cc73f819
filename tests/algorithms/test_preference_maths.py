"""DPO, cDPO, rDPO, IPO and Bradley–Terry losses against values worked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from rlhfv.algorithms.preference import (
    PreferenceLogprobs,
    bradley_terry_loss,
    dpo_sigmoid_loss,
    ipo_loss,
    preference_loss,
    robust_dpo_loss,
)

SOFTPLUS_MINUS_1 = math.log(1 + math.exp(-1))  # −log σ(1) = 0.3132617
SOFTPLUS_1 = math.log(1 + math.e)  # −log σ(−1) = 1.3132617


def test_dpo_loss_is_log_two_when_the_policy_prefers_as_the_reference_does():
    h = torch.zeros(3)
    assert torch.allclose(dpo_sigmoid_loss(h, beta=0.5), torch.full((3,), math.log(2)))
    assert torch.allclose(dpo_sigmoid_loss(h, beta=0.5, label_smoothing=0.1), torch.full((3,), math.log(2)))


def test_dpo_and_cdpo_losses_match_hand_values():
    h = torch.tensor([2.0, -2.0])  # β·h = ±1 with β = 0.5
    assert torch.allclose(dpo_sigmoid_loss(h, 0.5), torch.tensor([SOFTPLUS_MINUS_1, SOFTPLUS_1]))
    # cDPO, ε = 0.2: 0.8·0.3132617 + 0.2·1.3132617 = 0.5132617 (and mirrored for h = −2)
    expected = torch.tensor(
        [0.8 * SOFTPLUS_MINUS_1 + 0.2 * SOFTPLUS_1, 0.8 * SOFTPLUS_1 + 0.2 * SOFTPLUS_MINUS_1]
    )
    assert torch.allclose(dpo_sigmoid_loss(h, 0.5, 0.2), expected)
    assert dpo_sigmoid_loss(h, 0.5, 0.2)[0].item() == pytest.approx(0.5132617, abs=1e-6)


def test_robust_dpo_loss_matches_hand_value_and_refuses_a_flip_rate_of_a_half():
    h = torch.tensor([2.0])
    # (0.8·0.3132617 − 0.2·1.3132617) / 0.6 = (0.2506094 − 0.2626523) / 0.6 = −0.0200716
    assert robust_dpo_loss(h, 0.5, 0.2).item() == pytest.approx(-0.0200716, abs=1e-6)
    assert torch.allclose(robust_dpo_loss(h, 0.5, 0.0), dpo_sigmoid_loss(h, 0.5))
    with pytest.raises(ValueError, match=r"\[0, 0.5\)"):
        robust_dpo_loss(h, 0.5, 0.5)


def test_ipo_loss_is_the_squared_distance_to_its_target_margin():
    # τ = 0.25 → target 1/(2τ) = 2: h = 3 gives 1, h = 0 gives 4, h = 2 gives 0
    assert torch.allclose(ipo_loss(torch.tensor([3.0, 0.0, 2.0]), 0.25), torch.tensor([1.0, 4.0, 0.0]))


def logprobs(chosen, rejected, ref_chosen, ref_rejected, chosen_tokens=(1,), rejected_tokens=(1,)):
    t = lambda v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    return PreferenceLogprobs(
        t(chosen), t(rejected), t(ref_chosen), t(ref_rejected), t(chosen_tokens), t(rejected_tokens)
    )


def test_preference_loss_metrics_are_the_implicit_rewards():
    # pair 1: ratios +1 and −1 → h = 2; pair 2: ratios −1 and +1 → h = −2; β = 0.5
    lp = logprobs([-3.0, -5.0], [-6.0, -4.0], [-4.0, -4.0], [-5.0, -5.0], [1, 1], [1, 1])
    loss, m = preference_loss(lp, beta=0.5)
    assert loss.item() == pytest.approx((SOFTPLUS_MINUS_1 + SOFTPLUS_1) / 2, abs=1e-6)
    assert m["reward/chosen"] == pytest.approx(0.0)  # (0.5 − 0.5) / 2
    assert m["reward/margin"] == pytest.approx(0.0)  # (+1 − 1) / 2
    assert m["reward/accuracy"] == pytest.approx(0.5)  # only the first pair ranks right
    assert m["logprobs/chosen"] == pytest.approx(-4.0) and m["logprobs/rejected"] == pytest.approx(-5.0)


def test_ipo_in_preference_loss_uses_per_token_mean_ratios():
    # chosen ratio 6 over 3 tokens = 2, rejected ratio −2 over 2 tokens = −1 → h = 3; τ = 0.25 → (3 − 2)² = 1
    lp = logprobs([0.0], [-2.0], [-6.0], [0.0], [3], [2])
    loss, _ = preference_loss(lp, beta=0.25, loss_type="ipo")
    assert loss.item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="loss_type"):
        preference_loss(lp, beta=0.25, loss_type="hinge")


def test_dpo_gradient_pushes_chosen_up_and_rejected_down_by_beta_sigma():
    chosen = torch.tensor([-2.0], requires_grad=True)
    rejected = torch.tensor([-2.0], requires_grad=True)
    lp = PreferenceLogprobs(
        chosen, rejected, torch.tensor([-2.0]), torch.tensor([-2.0]), torch.ones(1), torch.ones(1)
    )
    loss, _ = preference_loss(lp, beta=0.5)
    loss.backward()
    # d/dh −log σ(βh) = −β·σ(−βh) = −0.5·0.5 = −0.25 at h = 0; h rises with chosen, falls with rejected
    assert chosen.grad.item() == pytest.approx(-0.25)
    assert rejected.grad.item() == pytest.approx(0.25)


def test_bradley_terry_loss_with_and_without_margin():
    chosen, rejected = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])
    loss, m = bradley_terry_loss(chosen, rejected)
    assert loss.item() == pytest.approx((SOFTPLUS_MINUS_1 + SOFTPLUS_1) / 2, abs=1e-6)  # diffs +1, −1
    assert m["rm/accuracy"] == pytest.approx(0.5) and m["rm/margin"] == pytest.approx(0.0)
    with_margin, _ = bradley_terry_loss(chosen[:1], rejected[:1], margin=1.0)
    assert with_margin.item() == pytest.approx(math.log(2))  # r_w − r_l − m = 0


def test_nll_term_adds_the_chosen_per_token_negative_log_likelihood():
    # chosen log-prob −6 over 3 tokens → NLL 2 per token; α = 0.5 adds 1 to DPO's log 2 at h = 0
    lp = logprobs([-6.0], [-4.0], [-6.0], [-4.0], [3], [2])
    loss, m = preference_loss(lp, beta=0.1, nll_coef=0.5)
    assert loss.item() == pytest.approx(math.log(2) + 1.0)
    assert m["loss/nll"] == pytest.approx(2.0)
