"""Where a pretrained MLLM's time goes on this machine: the tower, the LM's forward and backward, and
sampling; float32 against bfloat16 autocast, in one invocation.

    python benchmarks/vlm_speed.py [--model <saved vlm_shapes folder>] [--threads 1] [--repeats 3]

Without --model it assembles the pulled EfficientNet-Lite0 + SmolLM2-135M-Instruct (an untrained
projector: the timings do not depend on it). Prints a table of median seconds per call.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch


def timed(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: first-call allocations, lazy inits
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a saved clip_lm folder (e.g. <run>/instruct/final)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from rlhfv.data.shapes import ShapesVQA
    from rlhfv.models.base import load_model
    from rlhfv.models.clip_lm import build_cnn_lm
    from rlhfv.training.batching import sft_loss

    model = load_model(args.model) if args.model else build_cnn_lm(feature_cache=None)
    module, vision = model.module, model.module.vision
    examples = [ShapesVQA(args.batch, image_size=224, split="test")[i] for i in range(args.batch)]
    batch = model.encoder([e.prompt for e in examples])
    cpu = torch.device("cpu")
    rows = []
    with torch.no_grad():
        rows.append(
            (
                "tower, uncached",
                "float32",
                timed(lambda: vision.feature_map(batch["pixel_values"]), args.repeats),
            )
        )
    for dtype in ("float32", "bfloat16"):
        def autocast(bf16: bool = dtype == "bfloat16") -> torch.autocast:
            return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

        def step() -> None:
            module.zero_grad(set_to_none=True)
            with autocast():
                loss, _ = sft_loss(model, examples, cpu)
            loss.backward()

        def sample() -> None:
            with torch.no_grad(), autocast():
                module.generate(
                    **batch, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=True
                )

        module.train()
        rows.append(("SFT step (forward + backward)", dtype, timed(step, args.repeats)))
        module.eval()
        rows.append((f"sample {args.new_tokens} tokens", dtype, timed(sample, args.repeats)))
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    print(f"batch {args.batch}, {args.threads} thread(s), {trainable / 1e6:.1f}M trainable parameters, "
          f"prompt {batch['input_ids'].shape[1]} tokens ({module.num_image_tokens} image tokens)")  # fmt: skip
    print("| what | dtype | median s |\n| --- | --- | --- |")
    for what, dtype, seconds in rows:
        print(f"| {what} | {dtype} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
