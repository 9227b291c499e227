"""One outgoing queue per connection, for both protocols: frames go out in the order they were queued, each
encoded once with the layer's encoder, by one task per connection (``run``).

Besides frames (msgspec Structs or dicts, or bytes already encoded) the queue takes:

* a **task** whose result is sent in its place (a frame that needs the store: the console's transcript): what
  is queued behind it waits for it, so order holds; None means nothing to send after all;
* a ``Lazy`` item, asked for its frame only when its turn comes (a console's live line that its
  transcript may already have carried);
* a ``Close``: close the socket once everything before it is sent; nothing queued later is.

The queue is bounded: a client that does not read (more than ``limit`` items waiting) is dropped at once with
``too_slow``, since it would otherwise make the server hold its frames without end. While ``held`` nothing is
sent: a reply that must go out first (a chat's hello, made durable) is put in front on ``release``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from websockets.exceptions import ConnectionClosed

from contactcentre.edge.frames.codec import encode
from contactcentre.edge.frames.policy import Close, Closes

log = logging.getLogger(__name__)


class Lazy:
    """An item whose frame is decided when it is sent (``frame()``: the frame, or None to send nothing)."""

    __slots__ = ()

    def frame(self) -> Any:
        raise NotImplementedError


class Outbox:
    """The queue of one socket. ``closing``: a close is queued or done, nothing more is taken."""

    def __init__(self, ws: Any, *, limit: int, too_slow: Closes, name: str) -> None:
        self.ws = ws
        self.limit = limit
        self.too_slow = too_slow
        self.name = name  # for the log: whose socket
        self.items: deque[Any] = deque()
        self.held = False
        self.closing = False
        self.done = False  # nothing more will be queued: ``run`` ends once the queue is empty
        self.wake = asyncio.Event()
        self._closer: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self.items)

    def send(self, item: Any) -> None:
        if self.closing:
            _cancel(item)
            return
        self.items.append(item)
        if len(self.items) > self.limit:
            log.warning("%s: %d frames unread; closing the connection", self.name, len(self.items))
            self.close_now(self.too_slow.value)
        elif not self.held:
            self.wake.set()

    def close(self, code: int, reason: str) -> None:
        """Close once what is queued has been sent."""
        if self.closing:
            return
        self.closing = True
        self.items.append(Close(code, reason))
        if not self.held:
            self.wake.set()

    def close_now(self, close: Close) -> None:
        """Forget what is queued and close at once (a send may be stuck on a client that does not read)."""
        self.drop()
        if self._closer is None:
            self._closer = asyncio.get_running_loop().create_task(self._close(close))

    async def _close(self, close: Close) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close(close.code, close.reason)

    def drop(self) -> None:
        """Forget what is queued and take nothing more (the connection is over, or not worth serving)."""
        self.closing = self.done = True
        self.held = False
        while self.items:
            _cancel(self.items.popleft())
        self.wake.set()

    def finish(self) -> None:
        """The reader is done: send what is queued (held or not), then stop."""
        self.done = True
        self.held = False
        self.wake.set()

    def hold(self) -> None:
        self.held = True

    def release(self, front: Iterable[Any] = (), skip: Callable[[Any], bool] | None = None) -> None:
        """Send ``front`` first, then what was queued while held, minus the items ``skip`` says ``front``
        already carries."""
        rest = [i for i in self.items if skip is None or not skip(i)]
        self.items = deque([*front, *rest])
        if any(isinstance(i, Close) for i in self.items):
            self.closing = True
        self.held = False
        self.wake.set()

    async def run(self) -> None:
        """Send the queue in order until it is closed, or done and empty."""
        ws, items, me = self.ws, self.items, asyncio.current_task()
        try:
            while True:
                items = self.items  # ``release`` replaces the deque
                while items and not self.held:
                    item = items.popleft()
                    if isinstance(item, Close):
                        self.drop()
                        await ws.close(item.code, item.reason)
                        return
                    if isinstance(item, asyncio.Task):
                        try:
                            item = await item
                        except asyncio.CancelledError:
                            if me is not None and me.cancelling():
                                raise
                            continue  # the frame's task was cancelled, not this one
                        except Exception:
                            log.exception("%s: preparing a frame failed", self.name)
                            continue
                    elif isinstance(item, Lazy):
                        item = item.frame()
                    if item is None:
                        continue
                    await ws.send(item if isinstance(item, bytes) else encode(item), text=True)
                    items = self.items
                if self.done and not self.held and not self.items:
                    return
                self.wake.clear()
                await self.wake.wait()
        except ConnectionClosed:
            self.drop()
        except Exception:  # a frame that does not encode must not take the server down
            log.exception("%s: sending failed; closing the connection", self.name)
            self.drop()
            with contextlib.suppress(Exception):
                await ws.close(*Closes.INTERNAL.value)


def _cancel(item: Any) -> None:
    if isinstance(item, asyncio.Task):
        item.cancel()


__all__ = ["Lazy", "Outbox"]
