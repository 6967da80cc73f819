"""Shaping maths against hand-worked numbers (spec §7 items 6 and 7) and the matching invariants."""

import pytest
import torch

from rlhfv.shaping.methods import (
    ADOPS,
    GRM,
    PBIM,
    PBRS,
    PIES,
    NoIntrinsic,
    RawIntrinsic,
    ShapingInputs,
    adops_f2,
    gae,
    linear_schedule,
)

t = torch.tensor


def inputs(intrinsic, dones, gamma=0.99, **kw):
    """ShapingInputs for a [T, N] rollout; unspecified value tensors are zero."""
    intrinsic = torch.as_tensor(intrinsic, dtype=torch.float32)
    zeros = torch.zeros_like(intrinsic)
    fields = dict(
        potential=zeros,
        potential_next=zeros,
        ext_rewards=zeros,
        v_ext=zeros,
        v_ext_next=zeros,
        v_int=zeros,
        v_int_next=zeros,
    )
    fields.update({k: torch.as_tensor(v, dtype=torch.float32) for k, v in kw.items()})
    return ShapingInputs(
        intrinsic=intrinsic,
        dones=torch.as_tensor(dones, dtype=torch.float32),
        gamma_ext=gamma,
        gamma_int=gamma,
        **fields,
    )


def test_adops_f2_clips_a_suboptimal_action_to_the_boundary_minus_epsilon():
    # Ω = (1 − 0.5) + 0.2 − 0.99·0.1 − 1.0 = −0.399; Q_E < V_E so F2 = min(0, Ω − 1e-6) = −0.399001
    f2 = adops_f2(t([1.0]), t([0.5]), t([0.2]), t([0.1]), t([1.0]), gamma=0.99, epsilon=1e-6)
    assert f2.item() == pytest.approx(-0.399001, abs=1e-6)
    assert (1.0 + f2).item() == pytest.approx(0.600999, abs=1e-6)  # F' = F + F2


def test_adops_f2_leaves_a_suboptimal_action_alone_when_the_intrinsic_reward_is_small():
    # same values, F = 0.1: Ω = 0.5 + 0.2 − 0.099 − 0.1 = 0.501 > 0 so F2 = 0
    f2 = adops_f2(t([1.0]), t([0.5]), t([0.2]), t([0.1]), t([0.1]), gamma=0.99, epsilon=1e-6)
    assert f2.item() == 0.0


def test_adops_f2_is_zero_for_an_optimal_action_with_negative_omega():
    # Q_E = 1 ≥ V_E = 0.5: Ω = −0.5 + 0.2 − 0.099 − 0.1 = −0.499 < 0 so F2 = max(0, Ω) = 0
    f2 = adops_f2(t([0.5]), t([1.0]), t([0.2]), t([0.1]), t([0.1]), gamma=0.99, epsilon=1e-6)
    assert f2.item() == 0.0


def test_adops_f2_raises_an_optimal_action_that_a_negative_intrinsic_reward_would_sink():
    # Q_E = V_E = 1, V_I = 1, V_I' = 0, F = −0.5: Ω = 0 + 1 − 0 + 0.5 = 1.5 so F2 = 1.5, F' = 1.0
    f2 = adops_f2(t([1.0]), t([1.0]), t([1.0]), t([0.0]), t([-0.5]), gamma=0.99)
    assert f2.item() == pytest.approx(1.5)


def test_adops_ext_weight_scales_the_extrinsic_gap():
    # ext_weight 2: Ω = 2·0.5 + 0.2 − 0.099 − 1.0 = 0.101 > 0 so the sub-optimal case needs no clip
    f2 = adops_f2(t([1.0]), t([0.5]), t([0.2]), t([0.1]), t([1.0]), gamma=0.99, ext_weight=2.0)
    assert f2.item() == 0.0


def test_adops_method_builds_q_ext_from_the_one_step_target():
    # r_E = 0.5, V_E(s') = 0 → Q_E = 0.5: the first worked example again, through the class.
    x = inputs([[1.0]], [[0.0]], ext_rewards=[[0.5]], v_ext=[[1.0]], v_int=[[0.2]], v_int_next=[[0.1]])
    assert ADOPS(epsilon=1e-6)(x, progress=0.3).item() == pytest.approx(0.600999, abs=1e-6)


def test_adopes_ramps_the_correction_in_and_adops_applies_it_fully():
    x = inputs([[1.0]], [[0.0]], ext_rewards=[[0.5]], v_ext=[[1.0]], v_int=[[0.2]], v_int_next=[[0.1]])
    adopes = ADOPS(epsilon=1e-6, ramp_fraction=0.5)
    assert adopes(x, progress=0.0).item() == pytest.approx(1.0)  # ζ = 0: raw F
    assert adopes(x, progress=0.25).item() == pytest.approx(1.0 - 0.5 * 0.399001, abs=1e-6)  # ζ = 0.5
    assert adopes(x, progress=0.9).item() == pytest.approx(0.600999, abs=1e-6)  # ζ = 1


def test_adops_masks_the_next_intrinsic_value_at_episode_end():
    # done: Q_E = r_E = 0.5 and V_I(s') counts as 0: Ω = 0.5 + 0.2 − 0 − 1.0 = −0.3 → F' = 0.7 − 1e-6
    x = inputs(
        [[1.0]],
        [[1.0]],
        ext_rewards=[[0.5]],
        v_ext=[[1.0]],
        v_ext_next=[[5.0]],
        v_int=[[0.2]],
        v_int_next=[[0.1]],
    )
    assert ADOPS(epsilon=1e-6)(x, progress=1.0).item() == pytest.approx(0.7 - 1e-6, abs=1e-7)


def test_grm_delay_one_matches_hand_worked_values():
    # γ = 0.5, F = 1, 2, 3, episode ends at t = 2:
    # F'_0 = 1; F'_1 = 2 − 2·1 = 0; F'_2 = 3 − 2·2 − 3 = −4; Σ γ^t F'_t = 1 + 0 − 1 = 0
    out = GRM(delay=1)(inputs([[1.0], [2.0], [3.0]], [[0.0], [0.0], [1.0]], gamma=0.5), 0.0)
    assert out.squeeze(1).tolist() == pytest.approx([1.0, 0.0, -4.0])


def test_pbim_pays_everything_back_at_the_last_step():
    # γ = 0.5, F = 1, 2, 3: F' = 1, 2, −(1·0.5^−2 + 2·0.5^−1) = −8; Σ γ^t F'_t = 1 + 1 − 2 = 0
    out = PBIM()(inputs([[1.0], [2.0], [3.0]], [[0.0], [0.0], [1.0]], gamma=0.5), 0.0)
    assert out.squeeze(1).tolist() == pytest.approx([1.0, 2.0, -8.0])


def discounted_episode_sums(shaped, dones, gamma):
    """Σ_t γ^(t − start) F'_t for every finished episode of every environment."""
    sums = []
    for n in range(shaped.shape[1]):
        acc, k = 0.0, 0
        for step in range(shaped.shape[0]):
            acc += gamma**k * float(shaped[step, n])
            k += 1
            if dones[step, n]:
                sums.append(acc)
                acc, k = 0.0, 0
    return sums


@pytest.mark.parametrize(
    "method", [GRM(delay=1), GRM(delay=3), GRM(delay=7), PBIM()], ids=["grm1", "grm3", "grm7", "pbim"]
)
def test_reward_matching_sums_to_zero_per_episode_across_rollout_boundaries(method):
    gen = torch.Generator().manual_seed(0)
    gamma, T, N, rollouts = 0.9, 16, 5, 4
    intrinsic = torch.rand(T * rollouts, N, generator=gen) + 0.1  # every reward is nonzero
    dones = (torch.rand(T * rollouts, N, generator=gen) < 0.15).float()
    dones[-1] = 1.0  # close the last episode of every env so each one is checked
    shaped = torch.cat(
        [
            method(inputs(intrinsic[i * T : (i + 1) * T], dones[i * T : (i + 1) * T], gamma=gamma), 0.0)
            for i in range(rollouts)
        ]
    )
    sums = discounted_episode_sums(shaped.double(), dones, gamma)
    assert len(sums) > N  # several episodes per env, some of them spanning rollouts
    assert sums == pytest.approx([0.0] * len(sums), abs=1e-4)
    assert not torch.allclose(shaped, torch.zeros_like(shaped))


def test_grm_with_a_delay_longer_than_the_episode_is_pbim():
    gen = torch.Generator().manual_seed(1)
    intrinsic = torch.rand(12, 3, generator=gen)
    dones = torch.zeros(12, 3)
    dones[[3, 11], :] = 1.0
    x = inputs(intrinsic, dones, gamma=0.95)
    assert torch.allclose(GRM(delay=20)(x, 0.0), PBIM()(x, 0.0), atol=1e-5)


def test_pbrs_episode_sum_is_minus_the_first_potential():
    # Telescoping with Φ(terminal) = 0: Σ γ^t (γΦ(s_{t+1}) − Φ(s_t)) = −Φ(s_0)
    phi = torch.tensor([[0.7], [0.3], [0.9], [0.4]])  # Φ(s_0..s_3); the episode ends after step 3
    phi_next = torch.cat([phi[1:], torch.tensor([[5.0]])])  # masked at the end
    dones = torch.tensor([[0.0], [0.0], [0.0], [1.0]])
    out = PBRS()(inputs(torch.zeros(4, 1), dones, gamma=0.9, potential=phi, potential_next=phi_next), 0.0)
    assert discounted_episode_sums(out, dones, 0.9) == pytest.approx([-0.7])


def test_pies_weight_falls_linearly_to_zero():
    x = inputs([[2.0]], [[0.0]])
    pies = PIES(end_fraction=0.5)
    assert [pies(x, p).item() for p in (0.0, 0.25, 0.5, 0.9)] == pytest.approx([2.0, 1.0, 0.0, 0.0])


def test_no_intrinsic_and_raw_intrinsic():
    x = inputs([[2.0, 3.0]], [[0.0, 1.0]])
    assert NoIntrinsic()(x, 0.0).tolist() == [[0.0, 0.0]] and not NoIntrinsic.uses_intrinsic
    assert RawIntrinsic()(x, 0.0).tolist() == [[2.0, 3.0]] and RawIntrinsic.uses_intrinsic


def test_linear_schedule_edges():
    assert [linear_schedule(p, 0.4) for p in (0.0, 0.2, 0.4, 1.0)] == pytest.approx([0.0, 0.5, 1.0, 1.0])
    assert linear_schedule(0.0, 0.0) == 1.0


def test_gae_matches_hand_worked_values_and_cuts_at_episode_end():
    # γ = 0.5, λ = 1, r = 1, 1, V(s_t) = 0, V(s_1) = 0, V(s_2) = 2:
    # δ_1 = 1 + 0.5·2 = 2, δ_0 = 1; A_1 = 2, A_0 = 1 + 0.5·2 = 2
    rewards, values = torch.tensor([[1.0], [1.0]]), torch.zeros(2, 1)
    next_values = torch.tensor([[0.0], [2.0]])
    assert gae(rewards, values, next_values, torch.zeros(2, 1), 0.5, 1.0).squeeze(1).tolist() == [2.0, 2.0]
    # The episode ends at step 0: A_0 = r_0 = 1, nothing flows back from step 1.
    done0 = torch.tensor([[1.0], [0.0]])
    assert gae(rewards, values, next_values, done0, 0.5, 1.0).squeeze(1).tolist() == [1.0, 2.0]


def test_grm_rejects_a_zero_delay():
    with pytest.raises(ValueError, match="delay"):
        GRM(delay=0)


def test_adops_uses_the_papers_omega_unless_given_another_ext_weight():
    # the first worked example through the class: Ω = 1·(1 − 0.5) + 0.2 − 0.099 − 1.0 = −0.399
    x = inputs([[1.0]], [[0.0]], ext_rewards=[[0.5]], v_ext=[[1.0]], v_int=[[0.2]], v_int_next=[[0.1]])
    assert ADOPS()(x, progress=1.0).item() == pytest.approx(0.600999, abs=1e-6)
    # our variant, w = ext_coef / int_coef = 2: Ω = 0.101 > 0, no correction
    assert ADOPS(ext_weight=2.0)(x, progress=1.0).item() == pytest.approx(1.0)


def test_a_non_episodic_intrinsic_stream_bootstraps_v_int_across_the_episode_end():
    # as in the masking test, but the intrinsic stream runs on: Ω = 0.5 + 0.2 − 0.99·0.1 − 1.0
    x = inputs([[1.0]], [[1.0]], ext_rewards=[[0.5]], v_ext=[[1.0]], v_ext_next=[[5.0]], v_int=[[0.2]],
               v_int_next=[[0.1]], int_dones=[[0.0]])  # fmt: skip
    assert ADOPS(epsilon=1e-6)(x, progress=1.0).item() == pytest.approx(0.600999, abs=1e-6)
