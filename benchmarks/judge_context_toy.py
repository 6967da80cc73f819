"""Does prompt length stop a tiny judge from learning a comparison? A controlled toy.

The target is one sentence with a pure equality test inside it,
"Response 1 says A, the image shows B: right|wrong." (A and B drawn at random, equal half the
time), so the verdict never depends on the prompt. Only the prompt in front of it changes:
- short: "Judge." (24 tokens with the chat template);
- long: a fixed 151-token instruction text;
- image: a ShapesVQA image and question (46 tokens);
- judge: the full pointwise judge prompt of a ShapesVQA pair (255 tokens).
The model is the flagship's tiny Qwen2-VL (hidden 96, 2 layers, kv_heads 3) from random weights,
trained through the real SFT path (`sft_loss`), batch 16, lr 1e-3. Every 200 steps it prints the
mean teacher-forced probability of the right verdict token on 96 held-out sentences behind
`--prompt`'s prompts (their sentences are not trained on; the images behind them may be, which
does not matter: the verdict never depends on the prompt). `--switch N` trains on short prompts for the first N steps and on `--prompt`
after (a curriculum), still evaluating on `--prompt`.

    python benchmarks/judge_context_toy.py --prompt judge --steps 2000
    python benchmarks/judge_context_toy.py --prompt judge --steps 1400 --switch 600
"""

from __future__ import annotations

import argparse
import random

import torch

from rlhfv.data.pairs import ShapesPairs
from rlhfv.grm.prompts import pointwise_prompt
from rlhfv.models.hf_vlm import tiny_qwen2_vl
from rlhfv.rollout import sequence_logprobs
from rlhfv.training.batching import sft_loss, tokenize_completions
from rlhfv.types import Example, Prompt

VALUES = ["1", "2", "3", "4", "red", "blue", "green", "yellow", "left", "right"]
LONG = "Judge the two answers below against the image and the question, then give scores. " * 8
VERDICTS = ("wro", "wrong", "ri", "right")  # the first token of the verdict word


def example(rng: random.Random, pair: object, prompt: str) -> Example:
    b = rng.choice(VALUES)
    a = b if rng.random() < 0.5 else rng.choice([v for v in VALUES if v != b])
    target = f"Response 1 says {a}, the image shows {b}: {'right' if a == b else 'wrong'}."
    if prompt == "short":
        p = Prompt(text="Judge.")
    elif prompt == "long":
        p = Prompt(text=LONG)
    elif prompt == "image":
        p = Prompt(text=pair.prompt.text, images=pair.prompt.images)  # type: ignore[attr-defined]
    else:
        p = pointwise_prompt(pair.prompt.text, list(pair.responses), pair.prompt.images)  # type: ignore[attr-defined]
    return Example(prompt=p, answer=target, label="", task="toy")


def verdict_probability(model, examples: list[Example]) -> float:  # type: ignore[no-untyped-def]
    model.module.eval()
    found = []
    for lo in range(0, len(examples), 32):
        chunk = examples[lo : lo + 32]
        ids, mask = tokenize_completions(model, [e.answer for e in chunk])
        with torch.no_grad():
            logprobs = sequence_logprobs(model, model.encoder([e.prompt for e in chunk]), ids, mask)
        for row in range(len(chunk)):
            pieces = [model.tokenizer.decode([t]) for t in ids[row].tolist()]
            at = next(
                j for j in range(len(pieces))
                if pieces[j].strip() in VERDICTS and "".join(pieces[:j]).rstrip().endswith(":")
            )  # fmt: skip
            found.append(logprobs[row, at].exp().item())
    model.module.train()
    return sum(found) / len(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", choices=["short", "long", "image", "judge"], default="judge")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument(
        "--switch", type=int, default=0, help="train on short prompts for this many steps first"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = tiny_qwen2_vl(hidden_size=96, kv_heads=3)
    pairs = ShapesPairs(size=2000, split="train", seed=2)
    held_out = [example(random.Random(1000 + i), pairs[1999 - i], args.prompt) for i in range(96)]
    print(
        f"{args.prompt}: {model.encoder([held_out[0].prompt])['input_ids'].shape[1]} prompt tokens",
        flush=True,
    )
    optimizer = torch.optim.AdamW(model.module.parameters(), lr=1e-3)
    rng = random.Random(0)
    model.module.train()
    for step in range(1, args.steps + 1):
        prompt = "short" if step <= args.switch else args.prompt
        batch = [example(rng, pairs[rng.randrange(2000)], prompt) for _ in range(16)]
        loss, _ = sft_loss(model, batch, torch.device("cpu"))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % 200 == 0:
            p = verdict_probability(model, held_out)
            print(
                f"step {step} (training on {prompt}): loss {loss.item():.3f}, verdict p {p:.3f}", flush=True
            )


if __name__ == "__main__":
    main()
