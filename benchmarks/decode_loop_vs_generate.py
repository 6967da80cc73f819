"""Is `transformers.generate` the slow part of a GRPO step on CPU, or the model's forward passes?

Times the same sampling two ways on SmolLM2-135M-Instruct (B rows, T new tokens each, every row
decodes exactly T tokens): `model.generate(...)`, which both rlhfv and TRL call, and a bare loop
of forward passes over a KV cache with multinomial sampling and nothing else. If the bare loop is
no faster, a decode loop of our own cannot speed sampling up; only fewer or cheaper forward passes can.

    python benchmarks/decode_loop_vs_generate.py --rows 8 --tokens 48 --threads 1
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    from transformers import DynamicCache

    from rlhfv.models.text_lm import load_text_lm
    from rlhfv.types import Prompt

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_text_lm(args.model)
    module = model.module.eval()
    batch = model.encoder(
        [Prompt("Write a short poem about the sea and the wind, in four lines.")] * args.rows
    )

    def generate() -> None:
        module.generate(
            **batch,
            max_new_tokens=args.tokens,
            min_new_tokens=args.tokens,
            do_sample=True,
            top_k=0,
            pad_token_id=model.pad_token_id,
        )

    def bare_loop() -> None:
        mask = batch["attention_mask"]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        out = module(
            input_ids=batch["input_ids"],
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        position = positions[:, -1:]
        for _ in range(args.tokens):
            token = torch.multinomial(torch.softmax(out.logits[:, -1].float(), dim=-1), 1)  # [B, 1]
            mask = torch.cat([mask, torch.ones_like(token)], dim=1)
            position = position + 1
            out = module(
                input_ids=token,
                attention_mask=mask,
                position_ids=position,
                past_key_values=cache,
                use_cache=True,
            )

    best = {}
    with torch.no_grad():
        for _ in range(args.repeats):
            for fn in (generate, bare_loop):
                started = time.perf_counter()
                fn()
                elapsed = time.perf_counter() - started
                best[fn.__name__] = min(best.get(fn.__name__, elapsed), elapsed)
    print(
        f"{args.rows} rows x {args.tokens} tokens, {args.threads} thread(s): generate {best['generate']:.2f} s, "
        f"bare loop {best['bare_loop']:.2f} s, ratio {best['generate'] / best['bare_loop']:.2f}"
    )


if __name__ == "__main__":
    main()
