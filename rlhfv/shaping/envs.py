"""Vectorised gymnasium environments with the standard preprocessing for each family.

- MiniGrid / BabyAI: the agent's 7×7×3 egocentric view (object, colour, state codes), divided by
  10 so the inputs are about unit size; the mission string is dropped (ImgObsWrapper).
- Atari (`ALE/...`): sticky actions (p = 0.25, the v5 default), frame skip 4, 84×84 grayscale,
  4 stacked frames, no life-loss terminals, episodes cut at `max_episode_frames` emulator frames
  (RND's Montezuma setting: 18,000 = 4,500 agent steps).
- Anything else registered with gymnasium (e.g. CartPole-v1) as it is.

Vector environments reset an ended sub-environment within the same step (SAME_STEP): the obs
returned is the new episode's first one and the true last obs is in `info["final_obs"]`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rlhfv.config import RecipeError


class EnvSpecError(RecipeError):
    """The environment id is unknown or its spaces are ones the networks cannot take (a recipe
    problem, so `rlhfv run` reports it as one, before any training)."""


def _make_one(env_id: str, max_episode_frames: int) -> Any:
    import gymnasium as gym

    if env_id.startswith(("MiniGrid", "BabyAI")):
        import minigrid  # noqa: F401  (registers the MiniGrid ids)
        from minigrid.wrappers import ImgObsWrapper

        env = ImgObsWrapper(gym.make(env_id))
        space = gym.spaces.Box(0.0, 25.5, env.observation_space.shape, np.float32)
        return gym.wrappers.TransformObservation(env, lambda o: o.astype(np.float32) / 10.0, space)
    if env_id.startswith("ALE/"):
        import ale_py

        gym.register_envs(ale_py)
        env = gym.make(
            env_id, frameskip=1, repeat_action_probability=0.25, max_num_frames_per_episode=max_episode_frames
        )
        env = gym.wrappers.AtariPreprocessing(
            env, noop_max=0, frame_skip=4, screen_size=84, grayscale_obs=True, terminal_on_life_loss=False
        )
        return gym.wrappers.FrameStackObservation(env, 4)
    return gym.make(env_id)


def make_env(env_id: str, max_episode_frames: int = 18000) -> Any:
    """One preprocessed environment; raises EnvSpecError naming the id if it cannot be built."""
    import gymnasium as gym

    try:
        return _make_one(env_id, max_episode_frames)
    except gym.error.Error as e:
        raise EnvSpecError(f"env.id = {env_id!r}: {e}") from e


def check_spaces(env_id: str, obs_space: Any, action_space: Any) -> tuple[tuple[int, ...], int]:
    """Observation shape and action count if the networks can take them, else EnvSpecError.

    The networks take a Box of 1 dimension (MLP), 3 dimensions below 36 pixels a side (flattened
    MLP: MiniGrid views) or a channels-first image at least 36×36 (CNN: Atari stacks), and a
    Discrete action space.
    """
    import gymnasium as gym

    if not isinstance(action_space, gym.spaces.Discrete):
        raise EnvSpecError(
            f"env.id = {env_id!r}: action space {action_space} is not Discrete; "
            "this PPO only has a categorical policy"
        )
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) not in (1, 3):
        raise EnvSpecError(
            f"env.id = {env_id!r}: observation space {obs_space} is not a Box of 1 or 3 "
            "dimensions; wrap the environment (e.g. FlattenObservation) first"
        )
    return tuple(int(d) for d in obs_space.shape), int(action_space.n)


def make_vector_env(
    env_id: str, num_envs: int, seed: int, max_episode_frames: int = 18000, asynchronous: bool = False
) -> Any:
    """`num_envs` copies in one vector env, reset with seeds seed, seed+1, …"""
    import gymnasium as gym

    probe = make_env(env_id, max_episode_frames)  # fail here, before starting N copies, on a bad id
    check_spaces(env_id, probe.observation_space, probe.action_space)  # … or on spaces we cannot take
    probe.close()
    fns = [lambda: _make_one(env_id, max_episode_frames) for _ in range(num_envs)]
    cls = gym.vector.AsyncVectorEnv if asynchronous else gym.vector.SyncVectorEnv
    envs = cls(fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    envs.action_space.seed(seed)
    return envs
