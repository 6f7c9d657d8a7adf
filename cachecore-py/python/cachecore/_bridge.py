"""Completes the asyncio future of an ``*_async`` call; the native module schedules it on the
future's loop (``loop.call_soon_threadsafe``) from the thread the operation ran on."""

from __future__ import annotations

import asyncio
from typing import Any


def complete(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.cancelled():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
