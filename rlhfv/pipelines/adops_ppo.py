"""PPO + RND with a pluggable intrinsic-reward shaping method (ADOPS, arXiv 2505.12611).

`main` trains one agent and reads top to bottom like CleanRL's ppo.py: collect a rollout from N
vectorised environments, score novelty with RND, shape it (rlhfv.shaping.methods), compute
separate extrinsic and intrinsic GAE advantages, then run clipped PPO epochs that also train the
RND predictor. `compare` runs `main` for every method × seed and writes `results.md` (table) and
`returns.png` (extrinsic return against frames) into its run folder.

The extrinsic stream is episodic. The intrinsic one is episodic by default (`episodic_intrinsic`):
PBIM and GRM match rewards within an episode, so that is their natural setting. With
`episodic_intrinsic: false` it runs on across episode ends as in RND (its GAE and ADOPS's
Q_I(s,a) = F' + γ_I·V_I(s') then bootstrap from the next episode's first state); PBIM and GRM still
match within episodes. Time-limit truncations end an episode like terminations do (CleanRL's
simplification).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from rlhfv.config import RunConfig, component_field, instantiate
from rlhfv.training.metrics import read_metrics
from rlhfv.training.run import start_run

logger = logging.getLogger(__name__)


@dataclass
class AdopsPPOConfig:
    """One PPO + RND run. Defaults suit MiniGrid-DoorKey-5x5 on a CPU.

    Attributes:
        env_id: A gymnasium id: `MiniGrid-…`, `ALE/…` (Atari preprocessing) or any Box/Discrete env.
        num_envs: Parallel environments N. async_envs: one process per environment.
        max_episode_frames: Atari only: emulator frames before an episode is cut (18,000 = 4,500 steps).
        total_steps: Agent-environment steps over all environments (Atari: ×4 emulator frames).
        num_steps: Rollout length T per environment.
        hidden: MLP width (Atari uses the CNN). rnd_dim: RND embedding size.
        gamma_ext, gamma_int: Discounts of the two streams (RND: 0.999 / 0.99).
        ext_coef, int_coef: Advantage = ext_coef·A_E + int_coef·A_I (RND: 2 / 1).
        update_proportion: Fraction of each minibatch the RND predictor learns from.
        obs_norm_warmup_steps: Random-action steps per env that seed RND's observation
            statistics; PPO-RND takes 50 rollouts of 128 steps (the default, 6,400).
        episodic_intrinsic: False lets the intrinsic stream run on across episodes, as in RND.
        shaping: A `rlhfv.shaping.methods` node (or any class with the ShapingMethod call).
    """

    env_id: str = "MiniGrid-DoorKey-5x5-v0"
    num_envs: int = 8
    async_envs: bool = False
    max_episode_frames: int = 18000
    total_steps: int = 100_000
    num_steps: int = 128
    hidden: int = 64
    rnd_dim: int = 64
    learning_rate: float = 2.5e-4
    update_epochs: int = 4
    num_minibatches: int = 4
    gamma_ext: float = 0.99
    gamma_int: float = 0.99
    gae_lambda: float = 0.95
    clip_coef: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    ext_coef: float = 2.0
    int_coef: float = 1.0
    update_proportion: float = 0.25
    obs_norm_warmup_steps: int = 128 * 50
    episodic_intrinsic: bool = True
    shaping: dict[str, Any] = component_field({"_component_": "rlhfv.shaping.methods.ADOPS"})
    run: RunConfig = field(default_factory=RunConfig)


def main(cfg: AdopsPPOConfig) -> dict[str, float]:
    from tqdm import tqdm

    from rlhfv.shaping.agent import Agent, is_image
    from rlhfv.shaping.envs import check_spaces, make_vector_env
    from rlhfv.shaping.methods import ShapingInputs, gae
    from rlhfv.shaping.rnd import RND, RunningMeanStd, discounted_running_sums

    # Check the environment and the shaping node before any training.
    envs = make_vector_env(cfg.env_id, cfg.num_envs, cfg.run.seed, cfg.max_episode_frames, cfg.async_envs)
    obs_shape, n_actions = check_spaces(cfg.env_id, envs.single_observation_space, envs.single_action_space)
    shaping = instantiate(cfg.shaping)
    run = start_run(cfg)
    device = run.device
    N, T = cfg.num_envs, cfg.num_steps
    batch_size = N * T
    minibatch_size = batch_size // cfg.num_minibatches
    num_updates = max(1, cfg.total_steps // batch_size)
    frame_skip = 4 if cfg.env_id.startswith("ALE/") else 1
    use_int = bool(shaping.uses_intrinsic)

    # RND sees only the newest frame of an Atari stack.
    image = is_image(obs_shape)
    rnd_shape = (1, *obs_shape[1:]) if image else obs_shape

    def rnd_view(o: torch.Tensor) -> torch.Tensor:
        return o[:, -1:] if image else o

    agent = Agent(obs_shape, n_actions, cfg.hidden).to(device)
    rnd = RND(rnd_shape, cfg.rnd_dim).to(device)
    params = list(agent.parameters()) + list(rnd.predictor.parameters())
    optimizer = torch.optim.Adam(params, lr=cfg.learning_rate, eps=1e-5)
    int_return_rms = RunningMeanStd().to(device)  # std of discounted intrinsic reward sums
    int_carry = torch.zeros(N, device=device)  # [N] running discounted intrinsic sum
    if run.state is not None:  # resume: networks and statistics; episodes restart
        agent.load_state_dict(run.state["agent"])
        rnd.load_state_dict(run.state["rnd"])
        optimizer.load_state_dict(run.state["optimizer"])
        int_return_rms.load_state_dict(run.state["int_return_rms"])
        int_carry = run.state["int_carry"].to(device)

    def as_tensor(x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x), device=device)

    next_obs = as_tensor(envs.reset(seed=cfg.run.seed)[0])  # [N, *obs]
    if use_int and run.state is None:  # seed the observation statistics with a random walk
        for _ in range(cfg.obs_norm_warmup_steps):
            o, *_ = envs.step(envs.action_space.sample())
            rnd.obs_rms.update(rnd_view(as_tensor(o)))
        next_obs = as_tensor(envs.reset(seed=cfg.run.seed + 10_000)[0])

    # Rollout storage, step-major.
    obs = torch.zeros((T, N, *obs_shape), dtype=next_obs.dtype, device=device)  # [T, N, *obs]
    real_next_obs = torch.zeros_like(obs)  # s_{t+1}, the true last obs where an episode ended
    actions = torch.zeros((T, N), dtype=torch.long, device=device)
    logprobs, ext_rewards, dones, v_ext, v_int = (torch.zeros((T, N), device=device) for _ in range(5))

    ep_return, ep_length = np.zeros(N), np.zeros(N, dtype=np.int64)
    recent: deque[float] = deque(maxlen=100)
    start_time, start_update = time.time(), run.start_step
    bar = tqdm(range(start_update + 1, num_updates + 1), desc=f"ppo {cfg.env_id}", mininterval=5.0)
    for update in bar:
        progress = (update - 1) / num_updates
        finished: list[tuple[float, int]] = []
        for t in range(T):
            obs[t] = next_obs
            with torch.no_grad():
                action, logprob, _, ve, vi = agent.act(next_obs)
            o, r, terminated, truncated, info = envs.step(action.cpu().numpy())
            done = np.logical_or(terminated, truncated)
            real_next = np.array(o, copy=True)
            for i in np.flatnonzero(done):
                real_next[i] = info["final_obs"][i]
            actions[t], logprobs[t], v_ext[t], v_int[t] = action, logprob, ve, vi
            ext_rewards[t], dones[t] = as_tensor(r).float(), as_tensor(done).float()
            real_next_obs[t] = as_tensor(real_next)
            next_obs = as_tensor(o)
            ep_return += r
            ep_length += 1
            for i in np.flatnonzero(done):
                finished.append((float(ep_return[i]), int(ep_length[i])))
                recent.append(float(ep_return[i]))
            ep_return[done], ep_length[done] = 0.0, 0

        with torch.no_grad():
            # V(s_{t+1}) is V(obs[t+1]) inside the rollout and V(next_obs) after it; where an episode
            # ended it is masked, so the reset obs standing in obs[t+1] does no harm.
            last_ve, last_vi = agent.values(next_obs)
            v_ext_next = torch.cat([v_ext[1:], last_ve[None]])  # [T, N]
            v_int_next = torch.cat([v_int[1:], last_vi[None]])
            int_dones = dones if cfg.episodic_intrinsic else torch.zeros_like(dones)  # [T, N]
            if use_int:
                # Novelty of s_{t+1} is the intrinsic reward; novelty of s_t is the PBRS potential.
                novelty_next = rnd.errors(rnd_view(real_next_obs.flatten(0, 1))).view(T, N)
                novelty = rnd.errors(rnd_view(obs.flatten(0, 1))).view(T, N)
                int_return_rms.update(
                    discounted_running_sums(novelty_next, int_carry, cfg.gamma_int).flatten()
                )
                scale = float(int_return_rms.var.sqrt()) + 1e-8
                intrinsic = novelty_next / scale
                shaped = shaping(
                    ShapingInputs(
                        intrinsic=intrinsic,
                        potential=novelty / scale,
                        potential_next=intrinsic,
                        ext_rewards=ext_rewards,
                        dones=dones,
                        v_ext=v_ext,
                        v_ext_next=v_ext_next,
                        v_int=v_int,
                        v_int_next=v_int_next,
                        gamma_ext=cfg.gamma_ext,
                        gamma_int=cfg.gamma_int,
                        int_dones=int_dones,
                    ),
                    progress,
                )  # [T, N]
                rnd.obs_rms.update(rnd_view(real_next_obs.flatten(0, 1)))
            else:
                intrinsic = shaped = torch.zeros_like(ext_rewards)
            adv_ext = gae(ext_rewards, v_ext, v_ext_next, dones, cfg.gamma_ext, cfg.gae_lambda)
            adv_int = gae(shaped, v_int, v_int_next, int_dones, cfg.gamma_int, cfg.gae_lambda)
            returns_ext, returns_int = adv_ext + v_ext, adv_int + v_int
            advantages = cfg.ext_coef * adv_ext + (cfg.int_coef * adv_int if use_int else 0.0)

        # Flatten the rollout to a batch of N·T samples.
        b_obs, b_next = obs.flatten(0, 1), real_next_obs.flatten(0, 1)
        b_actions, b_logprobs = actions.flatten(), logprobs.flatten()
        b_adv, b_ret_ext, b_ret_int = advantages.flatten(), returns_ext.flatten(), returns_int.flatten()

        stats: dict[str, list[float]] = {
            k: [] for k in ("policy", "value_ext", "value_int", "entropy", "rnd", "approx_kl", "clipfrac")
        }
        for _ in range(cfg.update_epochs):
            for idx in torch.randperm(batch_size, device=device).split(minibatch_size):
                _, new_logprob, entropy, new_ve, new_vi = agent.act(b_obs[idx], b_actions[idx])
                log_ratio = new_logprob - b_logprobs[idx]
                ratio = log_ratio.exp()
                adv = b_adv[idx]
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                pg_loss = torch.max(
                    -adv * ratio, -adv * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)
                ).mean()
                v_loss_ext = 0.5 * (new_ve - b_ret_ext[idx]).pow(2).mean()
                v_loss_int = 0.5 * (new_vi - b_ret_int[idx]).pow(2).mean()
                rnd_loss = (
                    rnd.predictor_loss(rnd_view(b_next[idx]), cfg.update_proportion)
                    if use_int
                    else torch.zeros((), device=device)
                )
                loss = (
                    pg_loss
                    - cfg.ent_coef * entropy.mean()
                    + cfg.vf_coef * (v_loss_ext + (v_loss_int if use_int else 0.0))
                    + rnd_loss
                )
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                with torch.no_grad():
                    stats["approx_kl"].append(float(((ratio - 1) - log_ratio).mean()))
                    stats["clipfrac"].append(float(((ratio - 1).abs() > cfg.clip_coef).float().mean()))
                for key, value in (
                    ("policy", pg_loss),
                    ("value_ext", v_loss_ext),
                    ("value_int", v_loss_int),
                    ("entropy", entropy.mean()),
                    ("rnd", rnd_loss),
                ):
                    stats[key].append(float(value.detach()))

        frames = update * batch_size * frame_skip
        metrics: dict[str, float] = {f"losses/{k}": float(np.mean(v)) for k, v in stats.items()}
        metrics.update(
            {
                "charts/frames": frames,
                "charts/intrinsic_reward": float(intrinsic.mean()),
                "charts/shaped_intrinsic_reward": float(shaped.mean()),
                "perf/fps": (update - start_update) * batch_size / (time.time() - start_time),
            }
        )
        if finished:
            metrics["charts/episodic_return"] = float(np.mean([f[0] for f in finished]))
            metrics["charts/episodic_length"] = float(np.mean([f[1] for f in finished]))
            bar.set_postfix(ret=f"{np.mean(recent):.3f}", fps=f"{metrics['perf/fps']:.0f}")
        run.log(update, metrics)
        run.maybe_save(
            update,
            lambda: {
                "agent": agent.state_dict(),
                "rnd": rnd.state_dict(),
                "optimizer": optimizer.state_dict(),
                "int_return_rms": int_return_rms.state_dict(),
                "int_carry": int_carry,
            },
            force=update == num_updates,
        )  # the last one keeps the trained agent
    envs.close()
    summary = {
        "frames": num_updates * batch_size * frame_skip,
        "return_last100": float(np.mean(recent)) if recent else 0.0,
        "episodes_last100": len(recent),
        "fps": (num_updates - start_update) * batch_size / max(time.time() - start_time, 1e-9),
    }
    return run.finish(None, summary)


@dataclass
class AdopsCompareConfig:
    """Every shaping method × every seed on one training setup.

    Attributes:
        train: The shared PPO + RND setup (its `shaping` and `run` are replaced per run).
        methods: Name -> shaping node, e.g. `{adops: {_component_: rlhfv.shaping.methods.ADOPS}}`.
        seeds: Seeds to run each method with.
        final_fraction: The table's "final return" averages the episodes of this last fraction of frames.
        workers: Runs trained at once, each in its own process (1: one after another, in this process).
    """

    train: AdopsPPOConfig = field(default_factory=AdopsPPOConfig)
    methods: dict[str, Any] = component_field()
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    final_fraction: float = 0.2
    workers: int = 1
    run: RunConfig = field(default_factory=RunConfig)


def compare(cfg: AdopsCompareConfig) -> dict[str, float]:
    if not cfg.methods:
        raise ValueError("methods is empty: name at least one shaping method to compare")
    run = start_run(cfg)
    start = time.time()
    jobs: list[dict[str, Any]] = []  # resolved single-run configs still to train
    for name, node in cfg.methods.items():
        for seed in cfg.seeds:
            sub_dir = run.dir / str(name) / f"seed{seed}"
            if (sub_dir / "summary.json").exists():  # a finished run is reused on a rerun
                continue
            sub = OmegaConf.merge(OmegaConf.structured(AdopsPPOConfig), cfg.train)
            sub.shaping = node
            sub.run = OmegaConf.merge(
                cfg.run,
                {"dir": str(sub_dir), "name": f"{name}/seed{seed}", "seed": int(seed), "resume": "overwrite"},
            )
            jobs.append(OmegaConf.to_container(sub, resolve=True))
    if cfg.workers > 1 and len(jobs) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("spawn")  # no forked torch or environment state
        with ProcessPoolExecutor(min(cfg.workers, len(jobs)), mp_context=context) as pool:
            list(pool.map(_train_one, jobs, [True] * len(jobs)))
    else:
        for job in jobs:
            _train_one(job)

    curves: dict[str, list[list[tuple[float, float]]]] = {}
    for name in cfg.methods:
        for seed in cfg.seeds:
            rows = read_metrics(run.dir / str(name) / f"seed{seed}" / "metrics.jsonl")
            points = [
                (r["charts/frames"], r["charts/episodic_return"])
                for r in rows
                if "charts/episodic_return" in r
            ]
            curves.setdefault(str(name), []).append(points)
    table = comparison_table(curves, cfg.final_fraction)
    (run.dir / "results.md").write_text(table_markdown(table, cfg))
    plot_curves(curves, run.dir / "returns.png", f"{cfg.train.env_id}: extrinsic return")
    summary = {f"{name}/final_return": row["final_mean"] for name, row in table.items()}
    summary["wall_s"] = time.time() - start
    return run.finish(None, summary)


def _train_one(job: dict[str, Any], single_thread: bool = False) -> None:
    """One comparison run from its resolved config (also the entry point of pool workers)."""
    if single_thread:  # workers share the cores; one thread each avoids oversubscription
        torch.set_num_threads(1)
    logger.info("compare: %s", job["run"]["name"])
    main(OmegaConf.merge(OmegaConf.structured(AdopsPPOConfig), job))


def comparison_table(
    curves: dict[str, list[list[tuple[float, float]]]], final_fraction: float
) -> dict[str, dict[str, float]]:
    """Per method: final return (mean over seeds of the mean episodic return in the last
    `final_fraction` of frames), its std over seeds, and how many seeds ever finished an episode
    with positive return."""
    table = {}
    for name, seeds in curves.items():
        finals, solved = [], 0
        for points in seeds:
            if not points:
                finals.append(0.0)
                continue
            end = max(f for f, _ in points)
            late = [ret for f, ret in points if f >= (1 - final_fraction) * end]
            finals.append(float(np.mean(late)))
            solved += any(ret > 0 for _, ret in points)
        table[name] = {
            "final_mean": float(np.mean(finals)),
            "final_std": float(np.std(finals)),
            "seeds_with_success": solved,
            "seeds": len(seeds),
        }
    return table


def table_markdown(table: dict[str, dict[str, float]], cfg: DictConfig | AdopsCompareConfig) -> str:
    t = cfg.train
    lines = [
        f"# Shaping comparison on {t.env_id}",
        "",
        f"{t.total_steps} steps per run, {t.num_envs} envs × {t.num_steps} steps per rollout, seeds {list(cfg.seeds)}. "
        f"Final return: mean episodic extrinsic return over the last {cfg.final_fraction:.0%} of frames, "
        "mean ± std over seeds.",
        "",
        "| method | final return | seeds with a success |",
        "| --- | --- | --- |",
    ]
    for name, row in table.items():
        lines.append(
            f"| {name} | {row['final_mean']:.3f} ± {row['final_std']:.3f} | "
            f"{row['seeds_with_success']}/{row['seeds']} |"
        )
    return "\n".join(lines) + "\n"


def plot_curves(curves: dict[str, list[list[tuple[float, float]]]], path: Path, title: str) -> None:
    """Mean over seeds of the episodic return, on a common frame grid, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=80)
    for name, seeds in curves.items():
        ends = [max(f for f, _ in p) for p in seeds if p]
        if not ends:
            continue
        grid = np.linspace(0, max(ends), 50)
        # Each seed's curve is a running mean of its last few points, held flat before its first episode.
        interp = []
        for p in seeds:
            if not p:
                interp.append(np.zeros_like(grid))
                continue
            f, r = np.array(p).T
            smooth = (
                np.convolve(r, np.ones(5) / 5, mode="full")[: len(r)]
                * 5
                / np.minimum(np.arange(1, len(r) + 1), 5)
            )
            interp.append(np.interp(grid, f, smooth, left=0.0))
        ax.plot(grid, np.mean(interp, axis=0), label=name)
    ax.set_xlabel("frames")
    ax.set_ylabel("episodic extrinsic return")
    ax.set_title(title)
    if ax.lines:
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
