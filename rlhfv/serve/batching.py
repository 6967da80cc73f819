"""Concurrent requests gathered into shared judge calls (dynamic micro-batching).

Each request hands its rows (judge pairs, or pointwise items) to a `MicroBatcher` and awaits
their results. The batcher takes the first waiting request, then keeps taking more for up to
`max_wait_s` or until `max_rows` rows are gathered, and runs them all in ONE call of its
`run_rows` function on the judge's own thread. While that call runs, new requests queue up and
form the next batch, so under load each judge call is full and no request waits more than one
call plus `max_wait_s`. `max_rows = 1` serves one request at a time (the baseline batching is
measured against, `benchmarks/grm_serve_load.py`).

A request that gave up (its timeout passed) is dropped from the batch if it has not started yet.
An exception in `run_rows` fails exactly the requests of that batch; the batcher keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)


@dataclass
class _Job:
    rows: list[Any]
    future: asyncio.Future[list[Any]]


class MicroBatcher:
    """Gathers rows from concurrent requests into calls of `run_rows(rows) -> results`.

    Args:
        run_rows: Computes one result per row, in order (a judge call). Runs on `executor`.
        executor: Where `run_rows` runs; one thread shared by every batcher of a model, so the
            model is never called from two threads at once.
        max_rows: Rows per call; a request with more rows than this runs alone.
        max_wait_s: How long the first request of a batch waits for others to join it.
    """

    def __init__(
        self,
        run_rows: Callable[[list[Any]], Sequence[Any]],
        executor: Executor,
        max_rows: int,
        max_wait_s: float,
    ):
        if max_rows < 1 or max_wait_s < 0:
            raise ValueError(f"max_rows = {max_rows} (≥ 1) and max_wait_s = {max_wait_s} (≥ 0)")
        self.run_rows, self.executor = run_rows, executor
        self.max_rows, self.max_wait_s = max_rows, max_wait_s
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.calls = 0  # judge calls made (the /info endpoint reports rows per call)
        self.rows_done = 0
        # the pending `queue.get()`: kept across batches rather than cancelled on a timeout, so a
        # job can never be taken off the queue by a getter that is being cancelled
        self._getter: asyncio.Future[_Job] | None = None

    async def _next(self, timeout: float | None) -> _Job | None:
        """The next queued job, or None after `timeout` seconds."""
        if self._getter is None:
            self._getter = asyncio.ensure_future(self.queue.get())
        done, _ = await asyncio.wait({self._getter}, timeout=timeout)
        if not done:
            return None
        job, self._getter = self._getter.result(), None
        return job

    async def submit(self, rows: list[Any]) -> list[Any]:
        """Queue a request's rows and wait for their results (in the same order)."""
        if not rows:
            return []
        job = _Job(rows, asyncio.get_running_loop().create_future())
        await self.queue.put(job)
        return await job.future

    async def serve(self) -> None:
        """The batching loop; runs until cancelled (the app's lifespan starts and stops it)."""
        try:
            await self._batches()
        finally:
            if self._getter is not None:
                self._getter.cancel()

    async def _batches(self) -> None:
        loop = asyncio.get_running_loop()
        carried: _Job | None = None  # a job that did not fit the last batch starts the next one
        while True:
            first = carried or await self._next(None)
            assert first is not None
            carried = None
            batch, rows = [first], len(first.rows)
            deadline = loop.time() + self.max_wait_s
            while rows < self.max_rows:
                job = await self._next(max(0.0, deadline - loop.time()))
                if job is None:
                    break
                if rows + len(job.rows) > self.max_rows:
                    carried = job
                    break
                batch.append(job)
                rows += len(job.rows)
            batch = [job for job in batch if not job.future.done()]  # drop requests that gave up
            if not batch:
                continue
            flat = [row for job in batch for row in job.rows]
            try:
                results = list(await loop.run_in_executor(self.executor, self.run_rows, flat))
                if len(results) != len(flat):
                    raise RuntimeError(f"judge returned {len(results)} results for {len(flat)} rows")
            except Exception as e:
                logger.exception("judge call over %d rows failed", len(flat))
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(e)
                continue
            self.calls, self.rows_done = self.calls + 1, self.rows_done + len(flat)
            start = 0
            for job in batch:
                if not job.future.done():
                    job.future.set_result(results[start : start + len(job.rows)])
                start += len(job.rows)
