"""OpenRLHF with an rlhfv judge as its remote reward model: no adapter, the server speaks
OpenRLHF's `/get_reward`.

    rlhfv serve grm --model JUDGE --port 5000
    python -m openrlhf.cli.train_ppo_ray ... --reward.remote_url http://127.0.0.1:5000/get_reward

(older OpenRLHF releases call the flag `--remote_rm_url`). This script sends the request OpenRLHF
sends — `query` is prompt + response decoded with the policy's special tokens, `prompts` the
prompt, `labels` the data set's label — and prints the rewards, to check a server before a run:

    python examples/openrlhf_remote_rm.py --url http://127.0.0.1:5000
"""

from __future__ import annotations

import argparse
import json

import httpx


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:5000")
    p.add_argument("--token-file", default="")
    args = p.parse_args()
    prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    responses = ["The capital of France is Paris.<|im_end|>", "I think it is Lyon.<|im_end|>"]
    headers = {}
    if args.token_file:
        headers["Authorization"] = "Bearer " + open(args.token_file).read().strip()
    for response in responses:  # OpenRLHF's single-turn executor: one query per request
        body = {"query": [prompt + response], "prompts": [prompt], "labels": [""]}
        answer = httpx.post(args.url + "/get_reward", json=body, headers=headers, timeout=300)
        answer.raise_for_status()
        print(json.dumps({"response": response, **answer.json()}))


if __name__ == "__main__":
    main()
