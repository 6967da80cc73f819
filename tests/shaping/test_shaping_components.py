"""RND, the two-headed agent and the environment checks."""

import numpy as np
import pytest
import torch

from rlhfv.shaping.agent import Agent
from rlhfv.shaping.envs import EnvSpecError, check_spaces, make_env, make_vector_env
from rlhfv.shaping.rnd import RND, RunningMeanStd, discounted_running_sums


def test_running_mean_std_matches_numpy_over_several_batches():
    gen = np.random.default_rng(0)
    batches = [gen.normal(3.0, 2.0, size=(n, 3)) for n in (5, 17, 2)]
    rms = RunningMeanStd((3,))
    for b in batches:
        rms.update(torch.tensor(b))
    everything = np.concatenate(batches)
    assert np.allclose(rms.mean.numpy(), everything.mean(0), atol=1e-4)
    assert np.allclose(rms.var.numpy(), everything.var(0), atol=1e-3)


def test_discounted_running_sums_carry_over_between_rollouts():
    carry = torch.zeros(1)
    first = discounted_running_sums(torch.tensor([[1.0], [1.0]]), carry, 0.5)  # 1, 1.5
    second = discounted_running_sums(torch.tensor([[2.0]]), carry, 0.5)  # 0.75 + 2
    assert first.squeeze(1).tolist() == [1.0, 1.5] and second.item() == 2.75


def test_rnd_novelty_falls_on_observations_the_predictor_has_trained_on():
    torch.manual_seed(0)
    rnd = RND((7, 7, 3), out_dim=16)
    seen, unseen = torch.rand(32, 7, 7, 3), torch.rand(32, 7, 7, 3) + 1.0
    rnd.obs_rms.update(torch.cat([seen, unseen]))
    opt = torch.optim.Adam(rnd.predictor.parameters(), lr=3e-3)
    before = rnd.errors(seen).mean().item()
    for _ in range(40):
        opt.zero_grad()
        rnd.predictor_loss(seen, update_proportion=1.0).backward()
        opt.step()
    with torch.no_grad():
        assert rnd.errors(seen).mean().item() < 0.3 * before
        assert rnd.errors(seen).mean().item() < rnd.errors(unseen).mean().item()
    assert all(p.grad is None for p in rnd.target.parameters())  # the target stays random


def test_rnd_predictor_learns_from_the_requested_share_of_a_batch():
    rnd = RND((4,), out_dim=8)
    obs = torch.randn(4000, 4)
    torch.manual_seed(1)
    errors = rnd.errors(obs).detach()
    torch.manual_seed(1)
    keep = (torch.rand(4000) < 0.25).float()  # the same draw predictor_loss makes
    torch.manual_seed(1)
    rnd.errors(obs)  # advance no RNG: errors draws nothing
    loss = rnd.predictor_loss(obs, 0.25)
    assert 0.2 < keep.mean().item() < 0.3
    assert loss.item() == pytest.approx((errors * keep).sum().item() / keep.sum().item(), rel=1e-4)


def test_agent_gives_actions_and_both_values_for_grid_and_atari_observations():
    for shape, dtype in (((7, 7, 3), torch.float32), ((4, 84, 84), torch.uint8)):
        agent = Agent(shape, n_actions=5, hidden=24)
        obs = torch.zeros((3, *shape), dtype=dtype)
        action, logprob, entropy, v_ext, v_int = agent.act(obs)
        assert [x.shape for x in (action, logprob, entropy, v_ext, v_int)] == [torch.Size([3])] * 5
        assert torch.allclose(agent.act(obs, action)[1], logprob)
        assert torch.equal(agent.values(obs)[0], v_ext)
    assert Agent((4, 84, 84), 5).image and not Agent((7, 7, 3), 5).image


def test_unknown_environment_id_is_named_in_the_error():
    with pytest.raises(EnvSpecError, match="MiniGrid-NoSuchRoom-v0"):
        make_env("MiniGrid-NoSuchRoom-v0")
    with pytest.raises(EnvSpecError, match="NoSuchGame"):
        make_env("ALE/NoSuchGame-v5")


def test_continuous_actions_and_dict_observations_are_refused():
    import gymnasium as gym

    env = gym.make("Pendulum-v1")
    with pytest.raises(EnvSpecError, match="not Discrete"):
        check_spaces("Pendulum-v1", env.observation_space, env.action_space)
    dict_space = gym.spaces.Dict({"image": gym.spaces.Box(0, 1, (3,))})
    with pytest.raises(EnvSpecError, match="not a Box"):
        check_spaces("x", dict_space, gym.spaces.Discrete(3))


def test_minigrid_and_montezuma_get_the_standard_preprocessing():
    envs = make_vector_env("MiniGrid-DoorKey-5x5-v0", 2, seed=0)
    assert check_spaces("m", envs.single_observation_space, envs.single_action_space) == ((7, 7, 3), 7)
    obs, _ = envs.reset(seed=0)
    assert obs.dtype == np.float32 and obs.max() <= 1.0  # codes / 10
    envs.close()
    env = make_env("ALE/MontezumaRevenge-v5", max_episode_frames=400)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    steps, ended = 0, False
    while not ended:  # 400 emulator frames / frame skip 4 = 100 steps at most
        _, _, terminated, truncated, _ = env.step(0)
        ended, steps = terminated or truncated, steps + 1
    assert steps <= 100
    env.close()


def test_agent_samples_actions_in_proportion_to_its_policy():
    torch.manual_seed(0)
    agent = Agent((3,), n_actions=3, hidden=8)
    with torch.no_grad():
        agent.logits.bias.copy_(torch.log(torch.tensor([0.6, 0.3, 0.1])))
        agent.logits.weight.zero_()
        action, logprob, entropy, _, _ = agent.act(torch.zeros(20000, 3))
    freq = torch.bincount(action, minlength=3).float() / 20000
    assert torch.allclose(freq, torch.tensor([0.6, 0.3, 0.1]), atol=0.02)
    assert torch.allclose(logprob[action == 0], torch.log(torch.tensor(0.6)))
    # H = −(0.6 ln 0.6 + 0.3 ln 0.3 + 0.1 ln 0.1) = 0.8979
    assert entropy[0].item() == pytest.approx(0.8979, abs=1e-4)
