"""The pause between passes of a background loop: until stopped, woken, or the timeout."""

from __future__ import annotations

import asyncio
import contextlib


async def pause(stop: asyncio.Event, wake: asyncio.Event, timeout: float) -> None:
    waits = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())}
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
