"""The retry loop shared by the clip store and the result table: transient failures are tried again with a
jittered exponential backoff; the rest, and the last transient one, are raised as the module's own error."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


class RetryableError(Protocol):
    retryable: bool

    def __init__(self, message: str, *, retryable: bool) -> None: ...


async def with_retries(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    *,
    catch: tuple[type[BaseException], ...],
    translate: Callable[[str, BaseException], Exception],
    max_attempts: int,
    backoff_s: float,
) -> T:
    """`translate` turns a caught exception into the caller's error, whose `retryable` decides what happens."""
    for number in range(1, max_attempts + 1):
        try:
            return await attempt()
        except catch as exc:
            error = translate(what, exc)
            if not error.retryable:
                raise error from exc
            if number == max_attempts:
                raise type(error)(f"{error} (gave up after {number} attempts)", retryable=True) from exc
            delay_s = backoff_s * 2 ** (number - 1) * random.uniform(0.5, 1.0)
            logger.warning("%s: attempt %d/%d failed, retrying in %.2fs", what, number, max_attempts, delay_s,
                           exc_info=exc)
            await asyncio.sleep(delay_s)
    raise AssertionError("unreachable")
