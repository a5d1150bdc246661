"""`DynamicBatcher`: one inference thread that gathers concurrent requests into engine calls.

Requests (preprocessed ``(3, H, W)`` images or ``(N, 3, H, W)`` batches) queue up; the thread takes the oldest and lets
more join it until the batch holds ``max_batch`` images or ``max_wait_ms`` have passed, then runs one engine call and
hands each request its rows. It waits only while more requests are on their way (announced by :meth:`announce` when
one arrives and still being read or decoded): a lone request runs at once, so batching costs nothing at concurrency 1.
The queue is bounded: a request beyond ``max_queue`` raises :class:`QueueFull` (the server's 503).

The thread is the only one that calls the engine, so the HTTP routes and the live view's camera loop
(:meth:`infer`) share it without locks around the engine.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from edgecls.errors import EdgeclsError
from edgecls.metrics import sigmoid

log = logging.getLogger("edgecls.serve")


class QueueFull(EdgeclsError):
    """The batcher's queue holds ``max_queue`` requests already; try again later."""


class BatcherClosed(EdgeclsError):
    """The batcher was stopped; it takes no more requests."""


class InferenceTimeout(EdgeclsError):
    """A request was not answered within its timeout."""


@dataclass
class _Item:
    batch: np.ndarray  # (n, 3, H, W) float32, or (n, H, W, 3) uint8 pixels for an artifact normalising in the engine
    future: Future
    logits: bool  # the caller wants logits (KServe) rather than probabilities
    single: bool  # one (3, H, W) image: the result is its (K,) row
    queued: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class BatchStats:
    """One engine call: how many images, how long the engine took, how long its oldest request waited (seconds)."""

    size: int
    requests: int
    engine_s: float
    wait_s: float


class DynamicBatcher:
    """Gathers requests into engine calls on one inference thread.

    Args:
        engine: ``(N, 3, H, W) float32 -> (N, K)`` logits (a :class:`edgecls.runtime.Backend`'s ``infer``).
        num_classes: K, to check the engine's answer.
        max_batch: most images in one engine call (1: every request alone).
        max_wait_ms: longest the oldest request waits for others while more are on their way.
        max_queue: requests (not images) waiting for the engine, the forming batch included.
        on_batch: called on the inference thread after each engine call (metrics).
    """

    def __init__(self, engine: Callable[[np.ndarray], np.ndarray], *, num_classes: int, max_batch: int = 8,
                 max_wait_ms: float = 5.0, max_queue: int = 64,
                 on_batch: Callable[[BatchStats], None] | None = None) -> None:
        self._engine = engine
        self._num_classes = num_classes
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self._on_batch = on_batch
        self._queue: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._coming = 0  # requests announced and not yet submitted (being read or decoded)
        self._closed = False
        self._running = 0  # images in the engine call now
        self.batches = 0
        self.images = 0
        self._thread = threading.Thread(target=self._loop, name="edgecls-infer", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------------------------------------------------------------
    # submitting

    @property
    def depth(self) -> int:
        """Requests waiting for the engine (the forming batch included)."""
        return len(self._queue)

    @property
    def coming(self) -> int:
        """Requests announced and not yet submitted."""
        return self._coming

    @contextlib.contextmanager
    def announce(self) -> Iterator[None]:
        """Tell the batcher a request is on its way (while its body is read and decoded): batches forming meanwhile
        wait for it, up to ``max_wait_ms``. Leave the block once it is submitted (or has failed)."""
        with self._cond:
            self._coming += 1
        try:
            yield
        finally:
            with self._cond:
                self._coming -= 1
                self._cond.notify_all()

    def submit(self, x: np.ndarray, *, logits: bool = False) -> Future:
        """Queue one preprocessed image ``(3, H, W)`` or a batch ``(N, 3, H, W)`` (uint8 ``(H, W, 3)`` pixels or
        ``(N, H, W, 3)`` batches for an artifact that normalises in the engine); the future gives its ``(N, K)``
        probabilities (logits with ``logits=True``), or ``(K,)`` for a single image.

        Raises:
            QueueFull: ``max_queue`` requests are waiting already.
            BatcherClosed: the batcher was stopped.
        """
        single = x.ndim == 3
        batch = np.ascontiguousarray(x[None] if single else x, dtype=np.uint8 if x.dtype == np.uint8 else np.float32)
        if batch.ndim != 4:
            raise ValueError(f"expected a (3, H, W) image or an (N, 3, H, W) batch, got shape {x.shape}")
        future: Future = Future()
        item = _Item(batch, future, logits, single)
        with self._cond:
            if self._closed:
                raise BatcherClosed("the server is shutting down")
            if len(self._queue) >= self.max_queue:
                raise QueueFull(f"{len(self._queue)} requests are waiting for the engine (--max-queue "
                                f"{self.max_queue}); try again shortly")
            self._queue.append(item)
            self._cond.notify_all()
        return future

    def infer(self, batch: np.ndarray, timeout: float | None = None) -> np.ndarray:
        """Probabilities ``(N, K)`` of a preprocessed ``(N, 3, H, W)`` batch, from any thread (the live view's camera
        loop): queued like any request and run on the inference thread.

        Raises:
            QueueFull, BatcherClosed: as :meth:`submit`.
            InferenceTimeout: no answer within ``timeout`` seconds (the request is dropped if it has not started).
        """
        batch = np.asarray(batch)
        future = self.submit(batch[None] if batch.ndim == 3 else batch)
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            raise InferenceTimeout(f"no answer from the engine within {timeout:g} s") from None

    # ----------------------------------------------------------------------------------------------------------------
    # the inference thread

    def _take(self) -> list[_Item] | None:
        """The next batch: the oldest request, and those that join it before it is full or its wait is over."""
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if not self._queue:
                return None  # closed and drained
            deadline = self._queue[0].queued + self.max_wait

            def rows() -> int:
                return sum(len(i.batch) for i in self._queue if not i.future.cancelled())

            while not self._closed and rows() < self.max_batch and self._coming > 0:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._cond.wait(left)
            items: list[_Item] = []
            n = 0
            while self._queue:
                item = self._queue[0]
                if item.future.cancelled():
                    self._queue.popleft()
                    continue
                if items and n + len(item.batch) > self.max_batch:
                    break
                self._queue.popleft()
                if not item.future.set_running_or_notify_cancel():
                    continue
                items.append(item)
                n += len(item.batch)
                if n >= self.max_batch:
                    break
            self._running = n
            return items

    def _loop(self) -> None:
        while True:
            items = self._take()
            if items is None:
                return
            if not items:
                continue
            start = time.perf_counter()
            try:
                batch = items[0].batch if len(items) == 1 else np.concatenate([i.batch for i in items])
                logits = self._engine(batch)
                logits = np.asarray(logits, dtype=np.float32)
                if logits.shape != (len(batch), self._num_classes):
                    raise RuntimeError(f"the engine returned shape {logits.shape} for a batch of {len(batch)}, "
                                       f"expected ({len(batch)}, {self._num_classes})")
                probs = sigmoid(logits)
            except Exception as exc:  # noqa: BLE001  (every waiting request gets the error; the thread goes on)
                log.error("engine call failed: %s", exc)
                for item in items:
                    item.future.set_exception(exc)
                self._running = 0
                continue
            end = time.perf_counter()
            at = 0
            for item in items:
                n = len(item.batch)
                rows = (logits if item.logits else probs)[at : at + n]
                item.future.set_result(rows[0] if item.single else rows)
                at += n
            self._running = 0
            self.batches += 1
            self.images += len(batch)
            if self._on_batch is not None:
                try:
                    self._on_batch(BatchStats(len(batch), len(items), end - start, start - items[0].queued))
                except Exception:  # noqa: BLE001  (metrics never stop inference)
                    log.exception("batch callback failed")

    def stop(self, timeout: float | None = 10.0) -> None:
        """Run what is queued, then stop the thread; later submits raise :class:`BatcherClosed`."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()
