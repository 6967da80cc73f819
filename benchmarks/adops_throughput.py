"""Frames per second: our PPO (with and without RND) against stable-baselines3's PPO.

Same process, same environment and preprocessing (rlhfv.shaping.envs.make_env), same number of
environments, rollout length, epochs, minibatch size and network (separate 64-64 tanh MLPs for
actor and critic). The three trainers take turns, `--repeats` times, and the median is reported, so
load from other processes on the machine hits all of them alike.

    python benchmarks/adops_throughput.py --steps 16384 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch
from omegaconf import OmegaConf


def ours(
    env_id: str, steps: int, num_envs: int, num_steps: int, rnd: bool, seed: int, subproc: bool
) -> float:
    from rlhfv.pipelines.adops_ppo import AdopsPPOConfig, main

    method = "RawIntrinsic" if rnd else "NoIntrinsic"
    with tempfile.TemporaryDirectory() as tmp:
        cfg = OmegaConf.merge(
            OmegaConf.structured(AdopsPPOConfig),
            {
                "env_id": env_id,
                "num_envs": num_envs,
                "async_envs": subproc,
                "num_steps": num_steps,
                "total_steps": steps,
                "update_epochs": 4,
                "num_minibatches": 4,
                "hidden": 64,
                "shaping": {"_component_": f"rlhfv.shaping.methods.{method}"},
                "run": {"dir": tmp, "seed": seed, "device": "cpu"},
            },
        )
        start = time.perf_counter()
        main(cfg)
        return steps / (time.perf_counter() - start)


def sb3(env_id: str, steps: int, num_envs: int, num_steps: int, seed: int, subproc: bool) -> float:
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    from rlhfv.shaping.envs import make_env

    start = time.perf_counter()  # environment construction is inside the timing for both sides
    fns = [lambda: make_env(env_id) for _ in range(num_envs)]
    envs = SubprocVecEnv(fns) if subproc else DummyVecEnv(fns)
    model = PPO(
        "MlpPolicy",
        envs,
        n_steps=num_steps,
        batch_size=num_envs * num_steps // 4,
        n_epochs=4,
        policy_kwargs={"net_arch": {"pi": [64, 64], "vf": [64, 64]}},
        seed=seed,
        device="cpu",
        verbose=0,
    )
    model.learn(total_timesteps=steps)
    return steps / (time.perf_counter() - start)


def run() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="MiniGrid-DoorKey-5x5-v0")
    p.add_argument("--steps", type=int, default=16384)
    p.add_argument("--num-envs", type=int, default=8)
    p.add_argument("--num-steps", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--subproc", action="store_true", help="environments in subprocesses on both sides")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    # Untimed warm-up: the first optimizer built in a process imports torch._dynamo (seconds).
    a = (args.env, args.steps, args.num_envs, args.num_steps)
    sb3(args.env, 1024, args.num_envs, args.num_steps, 0, args.subproc)
    ours(args.env, 1024, args.num_envs, args.num_steps, True, 0, args.subproc)
    fps: dict[str, list[float]] = {"sb3_ppo": [], "ours_ppo": [], "ours_ppo_rnd": []}
    for r in range(args.repeats):
        fps["sb3_ppo"].append(sb3(*a, r, args.subproc))
        fps["ours_ppo"].append(ours(*a, False, r, args.subproc))
        fps["ours_ppo_rnd"].append(ours(*a, True, r, args.subproc))
        print(json.dumps({k: round(v[-1]) for k, v in fps.items()}), flush=True)
    med = {k: statistics.median(v) for k, v in fps.items()}
    print(
        json.dumps(
            {
                "env": args.env,
                "steps": args.steps,
                "num_envs": args.num_envs,
                "num_steps": args.num_steps,
                "threads": args.threads,
                "subproc_envs": args.subproc,
                "runs": {k: [round(x) for x in v] for k, v in fps.items()},
                "median_fps": {k: round(v) for k, v in med.items()},
                "ratio_ours_ppo_over_sb3": round(med["ours_ppo"] / med["sb3_ppo"], 2),
                "ratio_ours_ppo_rnd_over_sb3": round(med["ours_ppo_rnd"] / med["sb3_ppo"], 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    run()
