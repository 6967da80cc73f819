"""GRPO steps/s and peak memory: rlhfv against TRL's GRPOTrainer, same model, prompts and settings.

    python benchmarks/grpo_vs_trl.py                      # tiny text model, then SmolLM2-135M-Instruct
    python benchmarks/grpo_vs_trl.py --models tiny --steps 4
    python benchmarks/grpo_vs_trl.py --models smollm2 --engine vllm   # rlhfv samples with vLLM

With `--engine vllm` rlhfv samples in a vLLM process (`rlhfv engine install vllm` first), synced
with the trainer after every step; its peak memory is reported apart and added to rlhfv's (the
two peaks need not coincide, so the sum is an upper bound). TRL samples with transformers as
before: its own vLLM modes need a GPU.

Both trainers run in child processes of this one invocation, one after the other, alternating
(rlhfv, TRL, rlhfv, TRL, ...) so that load from other programs on the machine hits both alike. Each
child reports the wall time of every optimizer step (sampling, reward, log-probs, backward and
update all included) and its peak resident memory. The first `--warmup` steps of each child are
dropped and the median of the rest is reported. Settings shared by both: B prompts × G completions
per step, at most `--max-new-tokens` tokens, temperature 1, top-p 1, no top-k, no KL (β = 0), one
update per batch, ε = 0.2, token-mean loss ("dapo" in TRL), std-scaled group advantages, AdamW
lr 1e-6 without weight decay, gradient clipping 1.0, float32, no gradient checkpointing, the whole
batch in one forward pass. TRL (a benchmark-only dependency) is imported in its child only.
SmolLM2 must be pulled first: `rlhfv models pull smollm2-135m-instruct`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = [
    "Explain in a few sentences why the sky is blue.",
    "Describe how a bicycle works to a child.",
    "Write a short story about a red triangle that wants to be a circle.",
    "What are three good habits for writing clear code? Explain each.",
    "Explain what a neural network is, without any equations.",
    "Describe the water cycle step by step.",
    "Why do leaves change colour in autumn?",
    "Give advice to someone learning to cook for the first time.",
]


def vowel_share(prompts, completions, labels=None, **_) -> list[float]:
    """The benchmark reward (cheap, varied, the same function for both): share of vowels in the text."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]  # TRL passes chat messages
    return [sum(ch in "aeiou" for ch in t.lower()) / max(1, len(t)) for t in texts]


class BenchPrompts:
    """The benchmark questions as `Example`s (no labels)."""

    def __init__(self, size: int = 64):
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int):
        from rlhfv.types import Example, Prompt

        return Example(prompt=Prompt(QUESTIONS[index % len(QUESTIONS)]), answer="")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def peak_cuda_mb() -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0


def run_ours(args: argparse.Namespace, out_dir: Path) -> dict:
    from omegaconf import OmegaConf

    from rlhfv.config import validate_recipe
    from rlhfv.pipelines.grpo import main
    from rlhfv.training.metrics import read_metrics

    recipe = {
        "pipeline": "rlhfv.pipelines.grpo.main",
        "run": {
            "dir": str(out_dir),
            "device": args.device,
            "dtype": args.dtype,
            "resume": "overwrite",
            "seed": args.seed,
        },
        "policy": {"_component_": "rlhfv.models.text_lm.load_text_lm", "path": args.model_dir},
        "train_data": {"_component_": "grpo_vs_trl.BenchPrompts"},
        "reward": {
            "_component_": "rlhfv.rewards.rules.CallableReward",
            "function": "grpo_vs_trl.vowel_share",
        },
        "optimizer": {"_component_": "torch.optim.AdamW", "lr": 1e-6, "weight_decay": 0.0},
        "steps": args.warmup + args.steps,
        "prompts_per_step": args.prompts,
        "group_size": args.group_size,
        "max_new_tokens": args.max_new_tokens,
        "loss_norm": "token_mean",
        "kl_coef": 0.0,
        "log_rollouts_every": 0,
        "rollout_dtype": args.rollout_dtype,
        "rollout": {"engine": args.engine, "logprob_gap_warn": 0.0},
    }
    main(validate_recipe(OmegaConf.create(recipe), "benchmark"))
    rows = [r for r in read_metrics(out_dir / "metrics.jsonl") if "perf/step_s" in r]
    # the engine process has exited by now: the largest finished child's peak is the engine's
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    engine_mb = children.ru_maxrss / 1024 if args.engine == "vllm" else 0.0
    # the engine's CPU time is not in perf/step_cpu_s (another process): its whole run's, start-up
    # included, spread over the steps, is reported beside it
    engine_cpu_s = (
        (children.ru_utime + children.ru_stime) / max(1, len(rows)) if args.engine == "vllm" else 0.0
    )
    return {
        "step_s": [r["perf/step_s"] for r in rows][args.warmup :],
        "step_cpu_s": [r["perf/step_cpu_s"] for r in rows][args.warmup :],
        "sample_s": [r["perf/sample_s"] for r in rows][args.warmup :],
        "sync_s": [r.get("perf/sync_s", 0.0) for r in rows][args.warmup :],
        "logprob_gap": [r.get("rollout/logprob_gap", float("nan")) for r in rows],
        "completion_len": statistics.mean(r["completion/length_mean"] for r in rows),
        "peak_rss_mb": peak_rss_mb() + engine_mb,
        "engine_rss_mb": engine_mb,
        "engine_cpu_s_per_step": engine_cpu_s,
        "peak_cuda_mb": peak_cuda_mb(),
    }


def run_trl(args: argparse.Namespace, out_dir: Path) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(args.model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype="float32")
    n = args.prompts * args.group_size
    prompts = [[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}] for i in range(64)]
    times: list[float] = []
    cpu_times: list[float] = []
    lengths: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *_, **__):
            self.started, self.cpu_started = time.perf_counter(), time.process_time()

        def on_step_end(self, *_, **__):
            times.append(time.perf_counter() - self.started)
            cpu_times.append(time.process_time() - self.cpu_started)

        def on_log(self, _args, _state, _control, logs=None, **__):
            if logs and "completions/mean_length" in logs:
                lengths.append(logs["completions/mean_length"])

    config = GRPOConfig(
        output_dir=str(out_dir),
        use_cpu=args.device == "cpu",
        report_to=[],
        seed=args.seed,
        max_steps=args.warmup + args.steps,
        per_device_train_batch_size=n,
        num_generations=args.group_size,
        max_completion_length=args.max_new_tokens,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        beta=0.0,
        num_iterations=1,
        epsilon=0.2,
        loss_type="dapo",
        scale_rewards="group",
        learning_rate=1e-6,
        weight_decay=0.0,
        max_grad_norm=1.0,
        bf16=args.dtype == "bfloat16",
        gradient_checkpointing=False,
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=vowel_share,
        args=config,
        train_dataset=Dataset.from_dict({"prompt": prompts}),
        processing_class=tokenizer,
        callbacks=[StepTimer()],
    )
    trainer.train()
    return {
        "step_s": times[args.warmup :],
        "step_cpu_s": cpu_times[args.warmup :],
        "completion_len": statistics.mean(lengths) if lengths else float("nan"),
        "peak_rss_mb": peak_rss_mb(),
        "peak_cuda_mb": peak_cuda_mb(),
    }


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory(prefix=f"grpo-bench-{args.child}-") as tmp:
        result = (run_ours if args.child == "ours" else run_trl)(args, Path(tmp))
    print("RESULT " + json.dumps(result), flush=True)


def bf16_check(model_dir: str, args: argparse.Namespace) -> dict:
    """How far bf16 sampling (rlhfv's `rollout_dtype: bfloat16`) moves the policy, and what it saves.

    Samples B×G completions in float32 and again under bf16 autocast (same seed), and scores the
    float32 samples with both precisions: mean and max |Δ log π| per token and the k3 estimate of
    KL(π_fp32 || π_bf16) per token. For bf16 training (`run.dtype: bfloat16`) it also takes the
    GRPO policy gradient of those samples (benchmark reward, group advantages) in both precisions:
    their cosine and the relative size of their difference.
    """
    import torch

    from rlhfv.algorithms.grpo import group_advantages
    from rlhfv.models.text_lm import load_text_lm
    from rlhfv.rollout import generate, sequence_logprobs
    from rlhfv.types import Prompt

    torch.set_num_threads(args.threads)
    policy = load_text_lm(model_dir)
    policy.module.eval()
    prompts = [Prompt(q) for q in QUESTIONS[: args.prompts]]
    timings = {}
    for name, bf16 in (("fp32", False), ("bf16", True), ("fp32 again", False), ("bf16 again", True)):
        torch.manual_seed(args.seed)
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            rollout = generate(policy, prompts, args.group_size, args.max_new_tokens)
        timings[name] = time.perf_counter() - started
    torch.manual_seed(args.seed)
    rollout = generate(policy, prompts, args.group_size, args.max_new_tokens)
    batch, ids, mask = rollout.prompt_batch, rollout.completion_ids, rollout.completion_mask
    with torch.no_grad():
        lp32 = sequence_logprobs(policy, batch, ids, mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lp16 = sequence_logprobs(policy, batch, ids, mask)
    advantages = group_advantages(torch.tensor(vowel_share(None, rollout.texts)), args.group_size).unsqueeze(
        1
    )  # [N, 1]
    grads = []
    for bf16 in (False, True):
        policy.module.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            lp = sequence_logprobs(policy, batch, ids, mask)
        (-(advantages * lp).sum() / mask.sum()).backward()
        grads.append(torch.cat([p.grad.flatten() for p in policy.module.parameters() if p.grad is not None]))
    g32, g16 = grads[0].double(), grads[1].double()
    keep = mask.bool()
    delta = (lp16 - lp32)[keep]
    log_ratio = -delta  # log π_fp32 − log π_bf16 on fp32 samples
    return {
        "sample_s_fp32": min(timings["fp32"], timings["fp32 again"]),
        "sample_s_bf16": min(timings["bf16"], timings["bf16 again"]),
        "mean_abs_dlogp": delta.abs().mean().item(),
        "max_abs_dlogp": delta.abs().max().item(),
        "k3_kl_per_token": (torch.exp(-log_ratio) - 1 + log_ratio).mean().item(),
        "mean_logp_fp32": lp32[keep].mean().item(),
        "grad_cosine_fp32_bf16": (g32 @ g16 / (g32.norm() * g16.norm())).item(),
        "grad_rel_diff": ((g16 - g32).norm() / g32.norm()).item(),
    }


def tiny_model_dir(tmp: Path) -> str:
    from rlhfv.models.base import save_model
    from rlhfv.models.text_lm import tiny_text_lm

    folder = tmp / "tiny_text_lm"
    save_model(tiny_text_lm(seed=0), folder)
    return str(folder)


def launch(kind: str, model_dir: str, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--model-dir",
        model_dir,
        f"--rollout-dtype={args.rollout_dtype}",
        f"--engine={args.engine}",
    ]
    for key in (
        "steps",
        "warmup",
        "prompts",
        "group_size",
        "max_new_tokens",
        "threads",
        "seed",
        "device",
        "dtype",
    ):
        cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"{kind} child failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(line[7:])


def compare(name: str, model_dir: str, args: argparse.Namespace) -> dict:
    runs: dict[str, list[dict]] = {"ours": [], "trl": []}
    for _ in range(args.repeats):
        for kind in ("ours", "trl"):
            runs[kind].append(launch(kind, model_dir, args))
            last = runs[kind][-1]
            if kind == "ours" and args.engine == "vllm":
                print(
                    f"  {name} ours (vLLM): median sampling {statistics.median(last['sample_s']):.2f} s, "
                    f"sync {statistics.median(last['sync_s']):.2f} s per step, engine peak {last['engine_rss_mb']:.0f} MB, "
                    f"engine CPU {last.get('engine_cpu_s_per_step', float('nan')):.2f} s per step (start-up included; not in CPU s/step below), "
                    f"logprob gap {max(last['logprob_gap']):.4f} at most",
                    flush=True,
                )
            print(
                f"  {name} {kind}: median {statistics.median(last['step_s']):.2f} s/step "
                f"({statistics.median(last['step_cpu_s']):.2f} CPU s/step) over {len(last['step_s'])}, "
                f"peak {last['peak_rss_mb']:.0f} MB RSS / {last['peak_cuda_mb']:.0f} MB CUDA, mean completion {last['completion_len']:.1f} tokens",
                flush=True,
            )
    summary = {}
    for kind, results in runs.items():
        steps = [s for r in results for s in r["step_s"]]
        summary[kind] = {
            "median_step_s": statistics.median(steps),
            "median_step_cpu_s": statistics.median(s for r in results for s in r["step_cpu_s"]),
            "steps_per_s": 1.0 / statistics.median(steps),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
            "peak_cuda_mb": max(r["peak_cuda_mb"] for r in results),
            "completion_len": statistics.mean(r["completion_len"] for r in results),
        }
    summary["ratio"] = summary["ours"]["steps_per_s"] / summary["trl"]["steps_per_s"]
    summary["cpu_ratio"] = summary["trl"]["median_step_cpu_s"] / summary["ours"]["median_step_cpu_s"]
    return summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="tiny,smollm2", help="comma list of: tiny, smollm2")
    p.add_argument(
        "--smollm2-dir",
        default="smollm2-135m-instruct",
        help="a folder, or a pulled model's name (found in the model home, as the CLI finds it)",
    )
    p.add_argument("--steps", type=int, default=4, help="timed steps per child")
    p.add_argument("--warmup", type=int, default=1, help="untimed first steps per child")
    p.add_argument("--repeats", type=int, default=1, help="children per trainer (alternating)")
    p.add_argument("--prompts", type=int, default=1, help="B prompts per step")
    p.add_argument("--group-size", type=int, default=8, help="G completions per prompt")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument(
        "--dtype", default="float32", choices=["float32", "bfloat16"], help="training precision, both"
    )
    p.add_argument("--rollout-dtype", default="", help="rlhfv only: sampling precision ('' = --dtype)")
    p.add_argument("--engine", default="hf", choices=["hf", "vllm"], help="rlhfv only: rollout.engine")
    p.add_argument(
        "--bf16-check",
        action="store_true",
        help="only measure bf16: sampling speed and drift, training-gradient agreement",
    )
    p.add_argument("--child", choices=["ours", "trl"], help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    flags = Path("/proc/cpuinfo").read_text()
    isa = (
        "AMX"
        if "amx_bf16" in flags
        else "no AMX, avx512_bf16"
        if "avx512_bf16" in flags
        else "no bf16 instructions"
    )
    print(
        f"GRPO step time, rlhfv vs TRL: B={args.prompts} G={args.group_size} max_new_tokens={args.max_new_tokens}, "
        f"{args.device} ({isa}), {args.threads} threads, training {args.dtype}, "
        f"rlhfv sampling {args.rollout_dtype or args.dtype} with {args.engine}"
    )
    if args.bf16_check:
        print(json.dumps(bf16_check(args.smollm2_dir, args), indent=2))
        return
    results = {}
    with tempfile.TemporaryDirectory(prefix="grpo-bench-") as tmp:
        for name in args.models.split(","):
            if name == "tiny":
                model_dir = tiny_model_dir(Path(tmp))
            elif name == "smollm2":
                from rlhfv.models.hub import resolve_model

                model_dir = str(resolve_model(args.smollm2_dir))  # names the pull command if absent
            else:
                raise SystemExit(f"unknown model {name!r}; choose tiny or smollm2")
            results[name] = compare(name, model_dir, args)
    print(json.dumps(results, indent=2))
    for name, r in results.items():
        print(
            f"{name}: rlhfv {r['ours']['steps_per_s']:.3f} steps/s, TRL {r['trl']['steps_per_s']:.3f} steps/s, "
            f"ratio {r['ratio']:.2f}x (CPU-time ratio {r['cpu_ratio']:.2f}x); peak memory rlhfv {r['ours']['peak_rss_mb']:.0f} MB, TRL {r['trl']['peak_rss_mb']:.0f} MB"
        )


if __name__ == "__main__":
    main()
