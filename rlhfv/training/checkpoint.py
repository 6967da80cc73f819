"""Checkpoints in safetensors + JSON, written atomically, loaded without unpickling anything.

A checkpoint is a folder `step_N/` holding `tensors.safetensors` and `state.json`. Any nested
state (model and optimizer state dicts, RNG states, data position …) is split into its tensors,
stored under their path in the structure, and everything else, stored as JSON with a placeholder
where a tensor was. The folder is written under a temporary name and renamed into place, then the
`latest` pointer is replaced, so a crash during a save leaves the previous checkpoint usable.
Temporary names carry the process id, so two processes never write through the same temporary
file (with several processes only rank 0 saves; see `rlhfv.training.run`).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

TENSOR = "__tensor__"
TUPLE = "__tuple__"
INT_KEYS = "__int_keys__"  # optimizer state is keyed by parameter index: keep the keys ints


def flatten_state(state: Any, prefix: str = "") -> tuple[Any, dict[str, torch.Tensor]]:
    """Split nested state into a JSON-able skeleton and a flat {path: tensor} dict."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(x: Any, path: str) -> Any:
        if isinstance(x, torch.Tensor):
            tensors[path] = x.detach().cpu().contiguous()
            return {TENSOR: path}
        if isinstance(x, dict):
            out = {str(k): walk(v, f"{path}.{k}" if path else str(k)) for k, v in x.items()}
            if x and all(isinstance(k, int) for k in x):
                return {INT_KEYS: out}
            if not all(isinstance(k, str) for k in x):
                raise TypeError(f"checkpoint state at {path!r} mixes key types; use str or int keys")
            return out
        if isinstance(x, tuple):
            return {TUPLE: [walk(v, f"{path}.{i}") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(x)]
        if isinstance(x, np.ndarray):
            return walk(torch.from_numpy(x.copy()), path)
        if isinstance(x, (np.integer, np.floating)):
            return x.item()
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        raise TypeError(f"checkpoint state at {path!r} has a {type(x).__name__}; store plain data or tensors")

    return walk(state, prefix), tensors


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of `flatten_state`."""
    if isinstance(skeleton, dict):
        if TENSOR in skeleton:
            return tensors[skeleton[TENSOR]]
        if TUPLE in skeleton:
            return tuple(unflatten_state(v, tensors) for v in skeleton[TUPLE])
        if INT_KEYS in skeleton:
            return {int(k): unflatten_state(v, tensors) for k, v in skeleton[INT_KEYS].items()}
        return {k: unflatten_state(v, tensors) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    return skeleton


def _unshare(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory (tied weights): copy the repeats."""
    seen: set[tuple[int, int]] = set()
    out = {}
    for k, t in tensors.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset())
        out[k] = t.clone() if key in seen and t.numel() else t
        seen.add(key)
    return out


def save_checkpoint(run_dir: str | Path, step: int, state: dict[str, Any], keep_last: int = 2) -> Path:
    """Write `run_dir/step_{step}/` atomically, point `latest` at it, prune old checkpoints."""
    run_dir = Path(run_dir)
    final = run_dir / f"step_{step}"
    tmp = run_dir / f".tmp_step_{step}_{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    skeleton, tensors = flatten_state(state)
    save_file(_unshare(tensors), str(tmp / "tensors.safetensors"))
    with (tmp / "state.json").open("w") as f:
        json.dump({"step": step, "state": skeleton}, f)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    write_atomic(run_dir / "latest", final.name)
    _fsync_dir(run_dir)
    for old in sorted(list_checkpoints(run_dir))[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(run_dir / f"step_{old}", ignore_errors=True)
    return final


def load_checkpoint(path: str | Path) -> tuple[int, dict[str, Any]]:
    """Read a `step_N/` folder back into (step, state)."""
    path = Path(path)
    meta = json.loads((path / "state.json").read_text())
    tensors = load_file(str(path / "tensors.safetensors"))
    return int(meta["step"]), unflatten_state(meta["state"], tensors)


def list_checkpoints(run_dir: str | Path) -> list[int]:
    """Steps of the complete checkpoints in a run folder."""
    steps = []
    for p in Path(run_dir).glob("step_*"):
        if p.is_dir() and (p / "state.json").is_file() and p.name[5:].isdigit():
            steps.append(int(p.name[5:]))
    return sorted(steps)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint: `latest` if it is valid, else the highest `step_N`."""
    run_dir = Path(run_dir)
    pointer = run_dir / "latest"
    if pointer.is_file():
        candidate = run_dir / pointer.read_text().strip()
        if (candidate / "state.json").is_file():
            return candidate
    steps = list_checkpoints(run_dir)
    return run_dir / f"step_{steps[-1]}" if steps else None


def rng_state() -> dict[str, Any]:
    """Every RNG a run draws from: Python, NumPy, torch CPU and CUDA."""
    py = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1], int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` in one rename: a reader sees the old file or the new one, whole."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
