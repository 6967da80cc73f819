"""A scripted annotator for tests and benchmarks: it labels through the same store API as a person.

It logs in as its own user, asks `next_task`, ranks the responses with the data's checker
(`is_correct(text, example)`: right answers above wrong ones, equal ones tied) and `submit`s,
just as the app does for a person; with probability `error_rate` it reverses its ranking. Each
answer's coin is drawn from (seed, annotator, task's external id after `prefix`), so a labeller
restarted after a crash gives every task the answer it would have given anyway, and a run that
names its tasks with a random prefix (the active loop's id) still gets the same answers.
"""

from __future__ import annotations

import logging
import random
import secrets
from collections.abc import Callable, Mapping

from rlhfv.store.store import Store
from rlhfv.types import Example

logger = logging.getLogger(__name__)


class SimulatedAnnotator:
    """One scripted labeller (a store user named `name`, created if missing).

    Args:
        store: The preference store.
        name: Its user name.
        error_rate: Probability of reversing the checker's ranking, in [0, 1].
        seed: Seeds its answers (with its name and each task's external id).
    """

    def __init__(self, store: Store, name: str, error_rate: float = 0.0, seed: int = 0):
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError(f"SimulatedAnnotator.error_rate is a probability in [0, 1], got {error_rate!r}")
        self.store, self.name, self.error_rate, self.seed = store, name, error_rate, seed
        known = {u.name: u for u in store.users()}
        user = known.get(name) or store.add_user(name, secrets.token_hex(16), "annotator")
        self.user_id = user.id

    def label(
        self,
        examples: Mapping[str, Example],
        check: Callable[[str, Example], bool],
        prefix: str = "",
    ) -> int:
        """Label every task the store offers this user; return how many were labelled.

        Args:
            examples: The question behind each task, by the task's external id. A task not in it
                is one this labeller cannot answer: it is skipped (given back, as a person would).
            check: The data's checker.
            prefix: The part of every external id the coins leave out (a random run id).
        """
        done = 0
        while (view := self.store.next_task(self.user_id)) is not None:
            example = examples.get(view.external_id)
            if example is None:
                logger.warning(
                    "%s: task %d (external id %r) has no question it can check; skipped",
                    self.name, view.id, view.external_id,
                )  # fmt: skip
                self.store.skip(self.user_id, view.id)
                continue
            right = [check(text, example) for text in view.responses]
            ranks = [0 if r else 1 for r in right]  # right above wrong; all alike is a tie
            coin = random.Random(f"{self.seed}:{self.name}:{view.external_id.removeprefix(prefix)}").random()
            if coin < self.error_rate:
                ranks = [max(ranks) - r for r in ranks]  # the ranking reversed (a tie stays one)
            self.store.submit(self.user_id, view.id, ranks)
            done += 1
        return done
