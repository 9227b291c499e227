"""PLACEHOLDER on branch i18-core: replaced by the i18-ops branch's named store operations."""

from __future__ import annotations

from typing import Any

import msgspec


class StoreOp(msgspec.Struct, tag=True, frozen=True):
    def __call__(self, conn: Any) -> None:
        raise NotImplementedError


class Nothing(StoreOp):
    def __call__(self, conn: Any) -> None:
        return None


AnyStoreOp = Nothing
