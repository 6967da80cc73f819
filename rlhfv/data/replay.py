"""New training items mixed with a replay of older ones, so fine-tuning on a few new items does
not overwrite what a model learned from the old ones (experience replay against catastrophic
forgetting: Rolnick et al., "Experience Replay for Continual Learning", NeurIPS 2019; iterative
reward-model training in RLHFlow and OpenRLHF mixes the new preference pairs with the old data
the same way)."""

from __future__ import annotations

import random
from typing import Any


class ReplayMix:
    """Every item of `new`, followed by `round(ratio × len(new))` items drawn without
    replacement from `replay` under `seed` (all of `replay` when it has fewer).

    Args:
        new: The new items (a data set: `len` and indexing).
        replay: The older training data (a data set node, e.g. the GRM's own SFT data).
        ratio: Replayed items per new item (0: the new items alone).
        seed: Chooses the replayed items (the active loop gives each round its own).
    """

    def __init__(self, new: Any, replay: Any, ratio: float = 1.0, seed: int = 0):
        if ratio < 0:
            raise ValueError(f"ReplayMix.ratio is replayed items per new item, at least 0; got {ratio!r}")
        self.new, self.replay = new, replay
        wanted = min(len(replay), round(ratio * len(new)))
        self.chosen = random.Random(seed).sample(range(len(replay)), wanted)

    def __len__(self) -> int:
        return len(self.new) + len(self.chosen)

    def __getitem__(self, index: int) -> Any:
        if index < len(self.new):
            return self.new[index]
        return self.replay[self.chosen[index - len(self.new)]]
