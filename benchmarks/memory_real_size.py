"""Peak memory and time of one GRPO step at a real model size: a model shaped like
Qwen2.5-VL-3B-Instruct (random weights, nothing downloaded), with and without gradient checkpointing.

    python benchmarks/memory_real_size.py --new-tokens 128 --out results/memory_real_size.md

Settings (issue "Real model size on this machine"): G = 4 completions of one prompt with a small
synthetic image, 128 new tokens, LoRA r 16 on the language model, bf16 weights with bf16
autocast, gradient checkpointing on or off. The step is the GRPO pipeline's, from rlhfv's own
pieces: `rlhfv.rollout.generate` (KV cache, eval mode), log π_ref with the adapters off,
`sequence_logprobs` in training mode, `grpo_loss` with its KL term, backward, clipping, AdamW.

Each setting runs in its own child process, one after the other, so that its peak RSS
(`getrusage` ru_maxrss) is its own. The parent watches the child's RSS and the machine's
available memory and stops the child before it endangers the machine (`--limit-gb`), reporting
how far it got instead of crashing the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

# Qwen2.5-VL-3B-Instruct's config.json as published on the Hugging Face Hub
# (Qwen/Qwen2.5-VL-3B-Instruct): text model and vision tower.
TEXT = dict(
    hidden_size=2048,
    intermediate_size=11008,
    num_hidden_layers=36,
    num_attention_heads=16,
    num_key_value_heads=2,
    vocab_size=151936,
    max_position_embeddings=128000,
    rms_norm_eps=1e-6,
    hidden_act="silu",
    tie_word_embeddings=True,  # the 3B model shares its input and output embeddings
    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
)
VISION = dict(
    depth=32,
    hidden_size=1280,
    intermediate_size=3420,
    num_heads=16,
    out_hidden_size=2048,
    patch_size=14,
    spatial_merge_size=2,
    temporal_patch_size=2,
    window_size=112,
    fullatt_block_indexes=[7, 15, 23, 31],
    tokens_per_second=2,
    hidden_act="silu",
)
IMAGE_SIDE = 112  # pixels: 8×8 patches of 14, merged 2×2 into 16 image tokens
PROMPT = "Describe the picture in one sentence, then say which colour dominates."


def build_policy(gradient_checkpointing: bool, lora_r: int) -> Any:
    """The Qwen2.5-VL-3B-shaped model in bf16 with rlhfv's processor, hook and LoRA (ChatModel).

    The tokenizer is rlhfv's small offline one (the model's embedding keeps all 151936 rows);
    sampled ids beyond it decode to nothing, which changes no tensor shape or cost.
    """
    import torch
    import transformers as tf

    from rlhfv.models import hf_vlm

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>"]
    special += ["<|image_pad|>", "<|video_pad|>"]
    tok = hf_vlm._tiny_tokenizer(special, {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}, 800)
    ids = dict(zip(special, tok.convert_tokens_to_ids(special), strict=True))
    text = dict(TEXT, bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"])
    config = tf.Qwen2_5_VLConfig(
        text_config=text,
        vision_config=VISION,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    from accelerate import init_empty_weights

    with init_empty_weights():  # parameters on the meta device; buffers (rotary tables) are real
        module = tf.Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    fill_random(module)
    processor = tf.Qwen2_5_VLProcessor(
        image_processor=tf.Qwen2VLImageProcessor(patch_size=14, merge_size=2),
        video_processor=tf.Qwen2VLVideoProcessor(patch_size=14, merge_size=2),
        tokenizer=tok,
        chat_template=hf_vlm.QWEN_TEMPLATE,
    )
    pixels = IMAGE_SIDE * IMAGE_SIDE
    hf_vlm.pixel_range(processor, pixels, pixels, "memory_real_size")
    lora = {"r": lora_r, "alpha": 2 * lora_r}
    return hf_vlm._chat_model(module.eval(), processor, "bfloat16", lora, gradient_checkpointing, "sdpa")


def fill_random(module: Any, block_size: int = 1 << 22) -> None:
    """Give every meta parameter real bf16 memory: norms 1, biases 0, matrices a random block of
    N(0, 0.02²) values tiled. A full draw of 3.8 B normal values took minutes on the shared
    machine; memory and time do not depend on the values, only on their being finite."""
    import torch

    block = torch.empty(block_size, dtype=torch.bfloat16).normal_(0.0, 0.02)
    for name, sub in module.named_modules():
        for key, p in list(sub.named_parameters(recurse=False)):
            if p.device.type != "meta":
                continue
            data = torch.empty(p.shape, dtype=torch.bfloat16)
            flat = data.view(-1)
            if key == "bias":
                flat.zero_()
            elif "norm" in name or "ln_q" in name:
                flat.fill_(1.0)
            else:
                for start in range(0, flat.numel(), block_size):
                    part = flat[start : start + block_size]
                    part.copy_(block[: part.numel()])
            sub._parameters[key] = torch.nn.Parameter(data, requires_grad=p.requires_grad)
    module.tie_weights()  # lm_head shares the embedding, as in the 3B model


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def child(args: argparse.Namespace) -> None:
    """One setting, one GRPO step; prints phase lines and a final RESULT line (JSON)."""
    import torch
    from PIL import Image

    from rlhfv.algorithms.grpo import GRPOLossConfig, group_advantages, grpo_loss
    from rlhfv.rollout import generate, sequence_logprobs
    from rlhfv.types import Prompt

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    out: dict[str, Any] = {"gradient_checkpointing": args.checkpointing, "new_tokens": args.new_tokens}

    def phase(name: str, began: float) -> None:
        out[f"{name}_s"] = round(time.perf_counter() - began, 1)
        out[f"peak_after_{name}_gb"] = round(peak_gb(), 2)
        print(f"PHASE {name} {json.dumps(out)}", flush=True)

    began = time.perf_counter()
    policy = build_policy(args.checkpointing, args.lora_r)
    module = policy.module
    params = [p for p in module.parameters() if p.requires_grad]
    out["parameters_b"] = round(sum(p.numel() for p in module.parameters()) / 1e9, 3)
    out["trainable_m"] = round(sum(p.numel() for p in params) / 1e6, 2)
    phase("build", began)

    image = Image.new("RGB", (IMAGE_SIDE, IMAGE_SIDE), (200, 60, 40))
    g = args.group_size
    autocast = torch.autocast("cpu", dtype=torch.bfloat16)
    optimizer = torch.optim.AdamW(params, lr=1e-6)
    step_began = time.perf_counter()
    module.eval()  # 1. sampling, as the pipeline does: no dropout, KV cache
    with autocast:
        rollout = generate(policy, [Prompt(PROMPT, [image])], g, args.new_tokens, temperature=1.0)
    out["prompt_tokens"] = int(rollout.prompt_batch["input_ids"].shape[1])
    out["completion_tokens"] = int(rollout.completion_mask.sum())
    phase("sample", step_began)

    began = time.perf_counter()
    rewards = torch.rand(g)  # 2. any reward: the memory and time do not depend on it
    advantages = group_advantages(rewards, g)  # [N]
    args_lp = (rollout.prompt_batch, rollout.completion_ids, rollout.completion_mask, 1.0, g)
    with torch.no_grad(), autocast, module.disable_adapter():  # 3. π_ref: LoRA's reference is the base
        ref_lp = sequence_logprobs(module, *args_lp, suppressed_tokens=policy.suppressed_tokens)
    phase("reference", began)

    began = time.perf_counter()
    module.train()  # 4. the update
    with autocast:
        lp = sequence_logprobs(module, *args_lp, suppressed_tokens=policy.suppressed_tokens)  # [N, T]
    mask = rollout.completion_mask
    cfg = GRPOLossConfig(clip_eps=0.2, kl_coef=0.02)
    loss, metrics = grpo_loss(lp, lp.detach(), advantages, mask, cfg, ref_lp)
    phase("forward", began)
    began = time.perf_counter()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    phase("backward", began)
    out["step_s"] = round(time.perf_counter() - step_began, 1)
    out["loss"] = loss.item()
    out["peak_gb"] = round(peak_gb(), 2)
    print("RESULT " + json.dumps(out), flush=True)


def available_gb() -> float:
    import psutil

    return psutil.virtual_memory().available / 2**30


def run_setting(checkpointing: bool, args: argparse.Namespace) -> dict[str, Any]:
    """Run one setting in a child process under the memory watchdog."""
    import psutil

    command = [sys.executable, __file__, "--child", "--new-tokens", str(args.new_tokens)]
    command += ["--group-size", str(args.group_size), "--lora-r", str(args.lora_r)]
    command += ["--threads", str(args.threads)] + (["--checkpointing"] if checkpointing else [])
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    last: dict[str, Any] = {"gradient_checkpointing": checkpointing, "new_tokens": args.new_tokens}
    stopped: list[str] = []

    def watch() -> None:
        handle = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                rss = handle.memory_info().rss / 2**30
            except psutil.NoSuchProcess:
                return
            if rss > args.limit_gb:
                stopped.append(f"stopped: passed the {args.limit_gb} GB limit at {rss:.1f} GB RSS")
            elif available_gb() < args.reserve_gb:
                stopped.append(
                    f"stopped, machine short of memory: {available_gb():.1f} GB available "
                    f"(reserve {args.reserve_gb} GB) at {rss:.1f} GB RSS"
                )
            if stopped:
                proc.kill()
                return
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert proc.stdout is not None
    for line in proc.stdout:
        kind, _, payload = line.partition(" ")
        if kind in ("PHASE", "RESULT"):
            phase_name = payload.split(" ", 1)[0] if kind == "PHASE" else "done"
            last = json.loads(payload.split(" ", 1)[1] if kind == "PHASE" else payload)
            last["reached"] = phase_name
            print(
                f"  {'ckpt' if checkpointing else 'plain'}: {phase_name} {last}", file=sys.stderr, flush=True
            )
    proc.wait()
    watcher.join()
    if stopped:
        last["stopped"] = stopped[0]
    elif proc.returncode != 0:
        last["stopped"] = f"child exited with code {proc.returncode}"
    return last


def machine_state() -> dict[str, Any]:
    import psutil
    import torch

    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?"
    )
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores, amx_bf16: {'amx_bf16' in open('/proc/cpuinfo').read()}",
        "memory_total_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "memory_available_gb_at_start": round(available_gb(), 1),
        "load_average_at_start": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "peft": __import__("peft").__version__,
    }


def write_report(path: Path, command: str, state: dict[str, Any], results: list[dict[str, Any]]) -> None:
    lines = [
        "# One GRPO step at Qwen2.5-VL-3B size on the CPU machine",
        "",
        "Written by `benchmarks/memory_real_size.py` (random weights in the published model shape:",
        "3.75 B parameters, bf16; LoRA r 16 on the language model; G = 4; one image of "
        f"{IMAGE_SIDE}×{IMAGE_SIDE} pixels).",
        "",
        f"Command: `{command}`",
        "",
        "| gradient checkpointing | new tokens | peak RSS (GB) | after build (GB) | sampling (s) | π_ref (s) | forward (s) | backward + AdamW (s) | step (s) | outcome |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        outcome = r.get("stopped") or (
            "complete" if r.get("reached") == "done" else f"reached {r.get('reached')}"
        )
        cells = [
            "on" if r["gradient_checkpointing"] else "off",
            str(r["new_tokens"]),
            str(r.get("peak_gb", r.get(f"peak_after_{r.get('reached')}_gb", "—"))),
            str(r.get("peak_after_build_gb", "—")),
            *(str(r.get(k, "—")) for k in ("sample_s", "reference_s", "forward_s", "backward_s", "step_s")),
            outcome,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Machine state:", ""] + [f"- {k}: {v}" for k, v in state.items()]
    lines += ["", "Raw results:", "", "```json", json.dumps(results, indent=1), "```", ""]
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--settings", default="on,off", help="gradient checkpointing settings to run, in order"
    )
    parser.add_argument("--limit-gb", type=float, default=20.0, help="stop a child whose RSS passes this")
    parser.add_argument("--reserve-gb", type=float, default=1.0, help="stop a child when less is available")
    parser.add_argument("--start-gb", type=float, default=10.0, help="start a setting once this is available")
    parser.add_argument("--retries", type=int, default=1, help="runs again when other jobs took the memory")
    parser.add_argument("--out", type=Path, help="write a markdown report here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    state = machine_state()
    print(json.dumps(state), file=sys.stderr)
    results = []
    for setting in args.settings.split(","):
        for attempt in range(1 + args.retries):
            waited = 0
            while available_gb() < args.start_gb and waited < 300:  # other jobs' memory comes and goes
                time.sleep(10)
                waited += 10
            if available_gb() < args.start_gb:
                result = {"gradient_checkpointing": setting == "on", "new_tokens": args.new_tokens,
                          "stopped": f"not started: only {available_gb():.1f} GB available"}  # fmt: skip
                break
            result = run_setting(setting == "on", args)
            result["attempt"] = attempt + 1
            if "machine short" not in result.get("stopped", ""):  # retry only when the machine ran short
                break
        results.append(result)
    command = "python benchmarks/memory_real_size.py " + " ".join(sys.argv[1:])
    print(json.dumps(results, indent=1))
    if args.out:
        write_report(args.out, command, state, results)


if __name__ == "__main__":
    main()
