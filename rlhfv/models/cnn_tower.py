"""A pretrained CNN as an MLLM's vision tower: a spatial feature map pooled to a grid of image tokens.

Any timm model with a spatial feature map works (EfficientNet, ResNet, ConvNeXt …). The tower
returns what an open_clip ViT tower returns, so `ClipLM` treats both alike:

    pixels [I, 3, S, S] → trunk → feature map [I, C, h, w] (one of the trunk's stages, or its head)
                        → adaptive average pool → [I, C, g, g] → tokens [I, g·g, C] (row-major)
                        + pooled (the map's mean) [I, C]

With a frozen trunk, feature maps can be cached (`FeatureCache`): keyed by the bytes of each
image's pixels and a fingerprint of the trunk's weights, in memory (bounded) and on disk as
safetensors, so training pays for the LM alone and a changed tower never reuses stale features.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)


class FeatureCache:
    """Feature maps by (tower fingerprint, image content): an LRU in memory over a folder on disk.

    Args:
        folder: Where the safetensors files go (one sub-folder per tower fingerprint); None keeps
            the cache in memory only.
        max_bytes: Bound on the in-memory part; the least recently used entries leave first.
    """

    def __init__(self, folder: str | Path | None, max_bytes: int = 1 << 30):
        self.folder = Path(folder) if folder is not None else None
        self.max_bytes = max_bytes
        self.memory: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = 0

    def _file(self, key: str) -> Path | None:
        return (
            None if self.folder is None else self.folder / key[:16] / key[16:18] / f"{key[16:]}.safetensors"
        )

    def get(self, key: str) -> torch.Tensor | None:
        if key in self.memory:
            self.memory.move_to_end(key)
            self.hits += 1
            return self.memory[key]
        file = self._file(key)
        if file is not None and file.is_file():
            from safetensors.torch import load_file

            try:
                value = load_file(str(file))["features"]
            except Exception as e:  # a file cut short by a killed run: computed again, rewritten
                logger.warning("feature cache: %s unreadable (%s); recomputing", file, e)
                return None
            self.hits += 1
            self._remember(key, value)
            return value
        self.misses += 1
        return None

    def put(self, key: str, value: torch.Tensor) -> None:
        value = value.detach().contiguous()
        self._remember(key, value)
        file = self._file(key)
        if file is not None:
            from safetensors.torch import save_file

            file.parent.mkdir(parents=True, exist_ok=True)
            tmp = file.with_suffix(".tmp")
            save_file({"features": value}, str(tmp))
            tmp.replace(file)  # a reader never sees half a file

    def _remember(self, key: str, value: torch.Tensor) -> None:
        self.memory[key] = value
        self.bytes += value.numel() * value.element_size()
        while self.bytes > self.max_bytes and len(self.memory) > 1:
            _, old = self.memory.popitem(last=False)
            self.bytes -= old.numel() * old.element_size()


class GridTower(nn.Module):
    """timm CNN trunk → grid of image tokens; called like an open_clip ViT: `pooled, tokens = tower(x)`.

    Args:
        timm_model: timm model name, e.g. "tf_efficientnet_lite0".
        layer: Which feature map: an index into the trunk's `feature_info` (-1 = the last stage,
            for lite0 320×7×7; -2 = 112×14×14), or "head" (after the final 1×1 conv, 1280×7×7).
        grid: Side g of the token grid. The map is average-pooled to g×g by adaptive pooling (when
            g does not divide the map side, neighbouring windows overlap by one cell); g larger
            than the map side is an error.
        image_size: Input side the trunk was trained at; the map side follows from it.
        cache: A `FeatureCache`, used while the trunk is frozen.
    """

    def __init__(
        self, timm_model: str, layer: int | str, grid: int, image_size: int, cache: FeatureCache | None = None
    ):
        import timm

        super().__init__()
        try:
            self.trunk = timm.create_model(timm_model, pretrained=False, num_classes=0)
        except RuntimeError as e:  # timm: "Unknown model (…)"
            raise ValueError(f"tower: timm has no model {timm_model!r} ({e})") from e
        info, chs = self.trunk.feature_info, "num_chs"
        if layer == "head":
            channels, reduction = self.trunk.num_features, info[-1]["reduction"]
        elif isinstance(layer, int) and -len(info) <= layer < len(info):
            layer = layer % len(info)
            channels, reduction = info[layer]["num_chs"], info[layer]["reduction"]
        else:
            raise ValueError(
                f"tower layer={layer!r}: choose 'head' or an index into {timm_model}'s {len(info)} feature "
                f"stages ({', '.join(f'{i}: {s[chs]} channels' for i, s in enumerate(info))})"
            )
        side = image_size // reduction
        if not 1 <= grid <= side:
            raise ValueError(
                f"tower grid={grid}: the {timm_model} feature map at layer {layer} is {side}×{side} for "
                f"{image_size} px images; choose a grid from 1 to {side}"
            )
        self.timm_model, self.layer, self.grid, self.side = timm_model, layer, grid, side
        self.width, self.num_tokens = channels, grid * grid
        self.cache = cache
        self._fingerprint: tuple[int, str] | None = None  # (weights' versions and storage, digest)

    @property
    def trains(self) -> bool:
        return any(p.requires_grad for p in self.trunk.parameters())

    def train(self, mode: bool = True) -> GridTower:
        """A frozen trunk stays in eval mode: its batch-norm statistics are part of the pretrained model."""
        super().train(mode)
        self.trunk.train(mode and self.trains)
        return self

    def feature_map(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels [I, 3, S, S] → the chosen feature map [I, C, h, w], no cache."""
        if self.layer == "head":
            return self.trunk.forward_features(pixels)
        return self.trunk.forward_intermediates(
            pixels, indices=[self.layer], intermediates_only=True, stop_early=True
        )[0]

    def fingerprint(self) -> str:
        """Digest of the tower's identity and weights; recomputed only when a weight changed in place."""
        tensors = [*self.trunk.named_parameters(), *self.trunk.named_buffers()]
        # in-place writes bump a tensor's version; .to() and reassignment give it new storage
        version = hash(tuple((t._version, t.data_ptr()) for _, t in tensors))
        if self._fingerprint is None or self._fingerprint[0] != version:
            digest = hashlib.sha256(json.dumps([self.timm_model, self.layer]).encode())
            for name, tensor in tensors:
                digest.update(name.encode())
                digest.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
            self._fingerprint = (version, digest.hexdigest())
        return self._fingerprint[1]

    def cached_feature_map(self, pixels: torch.Tensor) -> torch.Tensor:
        """Like `feature_map`, computing only the images the cache has not seen."""
        assert self.cache is not None
        tower = self.fingerprint()[:16]
        keys = [
            tower + hashlib.sha256(p.cpu().reshape(-1).view(torch.uint8).numpy()).hexdigest() for p in pixels
        ]
        found = [self.cache.get(k) for k in keys]
        missing = [i for i, f in enumerate(found) if f is None]
        if missing:
            computed = self.feature_map(pixels[missing])  # [M, C, h, w]
            for i, features in zip(missing, computed, strict=True):
                self.cache.put(keys[i], features)
                found[i] = features
        return torch.stack([f.to(pixels.device) for f in found])  # [I, C, h, w]

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels [I, 3, S, S] → pooled [I, C], tokens [I, g·g, C]."""
        # a tower that trains changes its weights, hence its fingerprint, every step: no cache
        if self.cache is not None and not self.trains and not self.trunk.training:
            features = self.cached_feature_map(pixels)
        else:
            features = self.feature_map(pixels)  # [I, C, h, w]
        pooled = features.mean(dim=(2, 3))  # [I, C]
        grid = nn.functional.adaptive_avg_pool2d(features, self.grid)  # [I, C, g, g]
        return pooled, grid.flatten(2).transpose(1, 2)  # [I, g·g, C]


def read_tower_card(folder: str | Path) -> dict[str, Any]:
    """The `tower.json` that `rlhfv models pull` writes beside a tower's weights."""
    card = Path(folder) / "tower.json"
    if not card.is_file():
        raise FileNotFoundError(
            f"tower={str(folder)!r} has no tower.json; pull one with `rlhfv models pull efficientnet-lite0`"
        )
    return json.loads(card.read_text())


def load_trunk_weights(tower: GridTower, folder: str | Path) -> None:
    """Load a pulled tower's safetensors into the trunk (its ImageNet classifier is not used)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    file = Path(folder) / "model.safetensors"
    try:
        state = load_file(str(file))
    except (FileNotFoundError, SafetensorError, OSError) as e:
        raise ValueError(f"tower weights {file}: unreadable ({e}); pull again with --force") from e
    state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    missing, unexpected = tower.trunk.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"tower weights {file} do not fit {tower.timm_model}: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
