"""TRL's GRPOTrainer rewarded by an rlhfv judge served over HTTP (the grouped comparison).

    rlhfv serve grm --model JUDGE --port 8000 &
    python examples/trl_grpo.py --url http://127.0.0.1:8000 --policy POLICY_FOLDER --steps 10

POLICY_FOLDER is any causal LM folder with a chat template (for instance
`rlhfv models pull smollm2-135m-instruct`, then the folder `rlhfv models list` names).
"""

from __future__ import annotations

import argparse
import os

from rlhfv.integrations.trl import GroupedComparison

QUESTIONS = [
    "Explain in one sentence why the sky is blue.",
    "Give a short tip for writing clear emails.",
    "What is the capital of France? Answer briefly.",
    "Name two primary colours.",
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--token-file", default="")
    p.add_argument("--policy", required=True, help="a local model folder")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--group-size", type=int, default=4)
    p.add_argument("--out", default="checkpoints/trl_grpo_rlhfv_judge")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    config = GRPOConfig(
        output_dir=args.out,
        use_cpu=not __import__("torch").cuda.is_available(),
        report_to=[],
        max_steps=args.steps,
        per_device_train_batch_size=args.group_size,
        num_generations=args.group_size,
        max_completion_length=48,
        learning_rate=1e-6,
        logging_steps=1,
        save_strategy="no",
    )
    trainer = GRPOTrainer(
        model=args.policy,
        reward_funcs=[GroupedComparison(args.url, token_file=args.token_file)],
        args=config,
        train_dataset=Dataset.from_dict({"prompt": [[{"role": "user", "content": q}] for q in QUESTIONS]}),
        processing_class=AutoTokenizer.from_pretrained(args.policy, padding_side="left"),
    )
    trainer.train()
    for row in trainer.state.log_history:
        if "rewards/rlhfv_grouped_comparison/mean" in row:
            print(f"step {row['step']}: judge reward {row['rewards/rlhfv_grouped_comparison/mean']:.2f}")


if __name__ == "__main__":
    main()
