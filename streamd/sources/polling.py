"""Helpers the pollers share: bounded fan-out of requests, and URL pieces for messages
and for keeping a bearer token on its own origin."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar
from urllib.parse import urlsplit

import anyio

T = TypeVar("T")


async def fan_out(jobs: Iterable[T], workers: int, job: Callable[[T], Awaitable[None]], *,
                  prefer: type[Exception] | None = None) -> None:
    """Run `job` over `jobs`, `workers` at a time. After a failure no new job starts, the
    ones in flight finish (their requests are not cut off mid-way), and the error that
    decides what happens next is raised: the first of type `prefer` (an authorization
    failure, say), else the first."""
    pending = iter(jobs)
    errors: list[Exception] = []

    async def worker() -> None:
        for item in pending:
            if errors:
                return
            try:
                await job(item)
            except Exception as exc:
                errors.append(exc)
                return

    async with anyio.create_task_group() as tg:
        for _ in range(max(1, workers)):
            tg.start_soon(worker)
    if errors:
        raise next((e for e in errors if prefer is not None and isinstance(e, prefer)), errors[0])


def origin(url: str) -> tuple[str, str, int | None]:
    u = urlsplit(url)
    return u.scheme, (u.hostname or "").lower(), u.port or (443 if u.scheme == "https" else 80)


def url_path(url: str) -> str:
    return urlsplit(url).path
