"""verl's custom reward function, backed by an rlhfv judge served over HTTP.

    rlhfv serve grm --model JUDGE --port 8000

and in verl's config:

    custom_reward_function:
      path: examples/verl_reward.py
      name: compute_score            # per response; compute_score_batch with reward_manager: batch
      reward_kwargs: {url: "http://127.0.0.1:8000"}

The data must carry each question in `extra_info["question"]` (verl's preprocessing scripts put it
there; `reward_kwargs.question_key` names another key). Run this file to check a server:

    python examples/verl_reward.py --url http://127.0.0.1:8000
"""

from __future__ import annotations

import argparse

from rlhfv.integrations.verl import compute_score, compute_score_batch

__all__ = ["compute_score", "compute_score_batch"]

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8000")
    args = p.parse_args()
    info = {"question": "What is 7 * 6?"}
    for answer in ("42", "It is 48."):
        print(answer, compute_score("example", answer, "42", info, url=args.url))
    print(compute_score_batch(["example"] * 2, ["42", "It is 48."], ["42"] * 2, [info, info], url=args.url))
