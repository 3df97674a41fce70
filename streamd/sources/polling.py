"""Helpers the pollers share: bounded fan-out of requests, URL pieces (for messages, and
to keep a bearer token on its own origin), and the TLS of a provider's API."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import anyio

T = TypeVar("T")


class Gate:
    """Requests to one peer (an Asperion tenant, say): at most `concurrency` in flight, none
    before a 429's Retry-After has passed."""

    def __init__(self, concurrency: int) -> None:
        self.slots = anyio.Semaphore(concurrency)
        self.not_before = 0.0

    def pause(self, seconds: float) -> None:
        self.not_before = max(self.not_before, anyio.current_time() + seconds)

    async def wait(self) -> None:
        # A loop, not one sleep: another 429 may push `not_before` further while we wait.
        while (left := self.not_before - anyio.current_time()) > 0:  # noqa: ASYNC110
            await anyio.sleep(left)


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


def server_tls(ca: str | None) -> ssl.SSLContext:
    """TLS for a provider's API: the server verified against `ca`, else the system store.
    There is no way to turn verification off."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def check_https(name: str, value: str, provider: str) -> list[str]:
    url = urlsplit(value)
    if url.scheme != "https" or not url.hostname:
        return [f"{name}: expected an https:// URL, got {value!r} ({provider} is only reached over TLS)"]
    return []


def check_ca(ca: str | None) -> list[str]:
    if ca is None:
        return []
    if not Path(ca).is_file():
        return [f"ca: {ca} is not a readable file"]
    try:
        server_tls(ca)
    except (ssl.SSLError, OSError) as exc:
        return [f"ca: cannot load {ca} ({getattr(exc, 'reason', None) or exc})"]
    return []
