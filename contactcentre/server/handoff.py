"""Work handed from the event loop to a few threads, its result handed back: the store's reads and small writes.

``loop.run_in_executor`` with a ``ThreadPoolExecutor`` does this through two futures per call (a
``concurrent.futures.Future`` with its ``Condition``, chained to the loop's) and the executor's locks and
semaphore; at a few reads per chat that was about a tenth of the server's GIL time (py-spy, docs/loadgen.md).
Here the calls of one loop turn go over as one batch (one ``SimpleQueue.put``, so one thread woken) and
their results come back together (one ``call_soon_threadsafe``): waking a thread is what costs, more than the
work it is woken for.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, TypeVar

T = TypeVar("T")
_STOP = None  # what tells a thread to finish: put once per thread after the work already queued


Call = tuple[Callable[[], Any], "asyncio.Future[Any]"]


def _deliver(done: list[tuple[asyncio.Future[Any], BaseException | None, Any]]) -> None:
    for fut, failed, value in done:
        if fut.cancelled():  # the caller stopped waiting meanwhile
            continue
        if failed is not None:
            fut.set_exception(failed)
        else:
            fut.set_result(value)


class Handoff:
    """``threads`` threads running the functions ``run`` hands them, in the order handed, on ``loop``'s behalf.

    Like ``run_in_executor``: the caller awaits the result or the exception; a call whose caller was cancelled
    before a thread took it up is not run; ``close`` lets the work already handed over finish and then
    stops the threads; handing work over after ``close`` raises ``RuntimeError``. A batch is one thread's:
    several batches run at once on several threads, each inside ``around_batch()`` (where the store's readers
    keep one connection for the batch)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        threads: int,
        name: str,
        *,
        around_batch: Callable[[], AbstractContextManager[Any]] = nullcontext,
    ) -> None:
        self._loop = loop
        self._around_batch = around_batch  # entered by the thread around each batch it runs
        self._work: queue.SimpleQueue[list[Call] | None] = queue.SimpleQueue()
        self._batch: list[Call] = []  # handed over in this loop turn, not yet put on the queue
        self._closed = False
        self._threads = [threading.Thread(target=self._serve, name=f"{name}_{i}", daemon=True) for i in range(threads)]
        for t in self._threads:
            t.start()

    def run(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        if self._closed:
            raise RuntimeError("cannot hand work over after close")
        fut: asyncio.Future[T] = self._loop.create_future()
        if not self._batch:
            self._loop.call_soon(self._flush)
        self._batch.append((fn, fut))
        return fut

    def _flush(self) -> None:
        batch, self._batch = self._batch, []
        self._work.put(batch)

    def _serve(self) -> None:
        work, loop = self._work, self._loop
        while (batch := work.get()) is not _STOP:
            done: list[tuple[asyncio.Future[Any], BaseException | None, Any]] = []
            with self._around_batch():
                for fn, fut in batch:
                    if fut.cancelled():
                        continue
                    try:
                        done.append((fut, None, fn()))
                    except BaseException as exc:  # handed back to the awaiting caller, as run_in_executor does
                        done.append((fut, exc, None))
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
                loop.call_soon_threadsafe(_deliver, done)

    def close(self) -> None:
        """Finish what was handed over, then stop the threads (blocking the caller until they have)."""
        if self._closed:
            return
        self._closed = True
        if self._batch:
            self._flush()
        for _ in self._threads:
            self._work.put(_STOP)
        for t in self._threads:
            t.join()
