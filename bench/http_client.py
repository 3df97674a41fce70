"""Per-request cost of HTTP clients: one small request at a time to a receiver that answers at once.

    python bench/http_client.py                   # every variant, 5,000 requests each, x3
    python bench/http_client.py --requests 2000 --repeat 1 --variants httpx-get,h11-post

What the pollers (one GET per page or traffic report) and the http sink's `single`
format (one POST per event) pay for each request, apart from the network: each variant
runs in its own process, against the http sink bench's receiver (another process: HTTP/1.1, keep-alive,
answers 200 `{}` at once), one request at a time on one keep-alive connection.
Reported: requests/s and the client process's CPU per request (time.process_time).

Variants (`--variants`, comma-separated):
- httpx-get / httpx-post: httpx.AsyncClient as the pollers (`get`) and the http sink
  (`stream("POST")`, body read in chunks) use it, as configured there;
- …-sniffio: the same as if `sniffio` were not installed (its import refused in that
  process): httpcore imports it on every lock it sets up, and a failed import is not
  cached, so each request searched sys.path for it again. streamd depends on it now;
- httpx-get-prebuilt: the same GET with the URL (and its query) built once and the
  headers set on the client: what fewer copies of URL and headers per request would save;
- httpx-get-limit8: the pollers' GET with the pool limited to 8 connections (the
  pollers' concurrency) instead of unlimited with 32 kept alive;
- httpcore-post: httpcore's pool directly, without httpx's Request/Response layers;
- h11-post: the request written and the answer parsed with h11 over one anyio stream,
  as the http sink does it (streamd.http_conn);
- poller-get: the pollers' GET as they send it now, the whole of it: `ApiClient.get`
  (gate, token, timeout, retry wrapper, metrics) on streamd.http_conn's `Client`.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import ModuleType

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))

BODY = b'{"specversion":"1.0","id":"0123456789abcdef0123456789abcdef","source":"/synthetic/gen",' \
       b'"type":"invoice.created","seq":1,"data":{"total":"100.00","currency":"EUR"}}' + b" " * 500
VARIANTS = ("httpx-get-sniffio", "httpx-get", "httpx-get-prebuilt", "httpx-get-limit8", "httpx-post",
            "httpcore-post", "h11-post", "poller-get")


class NoSniffio(importlib.abc.MetaPathFinder):
    """`import sniffio` fails as it does where it is not installed, after the same search."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname == "sniffio":
            # The search a missing module costs: every entry of sys.path looked at.
            importlib.machinery.PathFinder.find_spec("sniffio_not_installed", None)
            raise ModuleNotFoundError("No module named 'sniffio'", name="sniffio")
        return None


async def timed(one: Callable[[], Awaitable[None]], n: int) -> tuple[float, float]:
    """One request to warm up, then n timed: (wall seconds, this process's CPU seconds)."""
    await one()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        await one()
    return time.perf_counter() - t0, time.process_time() - c0

async def client_main(variant: str, url: str, n: int) -> tuple[float, float]:
    """Seconds and CPU seconds for n requests."""
    if variant.endswith("-sniffio"):
        sys.meta_path.insert(0, NoSniffio())
    import httpx
    kind = variant.removesuffix("-sniffio")
    headers = {"content-type": "application/cloudevents+json", "idempotency-key": "k" * 32,
               "user-agent": "streamd/bench"}
    if kind == "h11-post":
        from streamd.http_conn import Connection, Target
        conn = Connection(Target.parse(url, None))
        try:
            async def one() -> None:
                resp = await conn.request(BODY, headers)
                assert resp.status == 200
            return await timed(one, n)
        finally:
            await conn.aclose()
    if kind == "poller-get":
        return await poller_get(url, n)
    if kind == "httpcore-post":
        import httpcore
        async with httpcore.AsyncConnectionPool(max_connections=1) as pool:
            async def one() -> None:
                async with pool.stream("POST", url, headers=list(headers.items()), content=BODY) as r:
                    async for _ in r.aiter_stream():
                        pass
                    assert r.status == 200
            return await timed(one, n)
    limits = (httpx.Limits(max_connections=8, max_keepalive_connections=8) if kind == "httpx-get-limit8"
              else httpx.Limits(max_connections=None, max_keepalive_connections=32))
    auth = {"Authorization": "Bearer " + "t" * 40, "Accept": "application/json"}
    async with httpx.AsyncClient(timeout=10, follow_redirects=False, trust_env=False, limits=limits,
                                 headers=auth if kind == "httpx-get-prebuilt" else None) as http:
        if kind == "httpx-get-prebuilt":
            prebuilt = httpx.URL(url, params={"page_number": "1", "page_size": "100"})

            async def one() -> None:
                r = await http.get(prebuilt)
                assert r.status_code == 200
        elif kind in ("httpx-get", "httpx-get-limit8"):
            async def one() -> None:
                r = await http.get(url, params={"page_number": "1", "page_size": "100"}, headers=auth)
                assert r.status_code == 200
        else:
            async def one() -> None:
                async with http.stream("POST", url, content=BODY, headers=headers) as r:
                    async for _ in r.aiter_bytes():
                        pass
                    assert r.status_code == 200
        return await timed(one, n)


async def poller_get(url: str, n: int) -> tuple[float, float]:
    import ssl
    from typing import Any, cast

    from streamd.config import BackoffPolicy
    from streamd.health import Health
    from streamd.metrics import Metrics
    from streamd.sources import SourceContext
    from streamd.sources.polling import ApiClient, Gate

    class Token:
        scheme = "Bearer"

        async def access_token(self) -> str:
            return "t" * 40

        async def refresh(self, failed: str | None = None) -> str:
            return "t" * 40

    metrics = Metrics()
    ctx = SourceContext(name="bench", provider="horisen", writer=cast(Any, None), reader=cast(Any, None),
                        metrics=metrics, component=Health().add("source", "bench"), routes=cast(Any, None))
    gate = Gate(8)
    async with ApiClient(ctx, ssl.create_default_context(), Token(), timeout=10, policy=BackoffPolicy(),
                         max_tries=8, describe=lambda r: "") as client:
        async def one() -> None:
            r = await client.get(url, {"page_number": "1", "page_size": "100"}, gate=gate)
            assert r.status_code == 200
        return await timed(one, n)


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--client":
        wall, cpu = anyio.run(client_main, sys.argv[2], sys.argv[3], int(sys.argv[4]))
        print(f"{wall} {cpu}")
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    args = ap.parse_args()
    from http_sink import ReceiverProcess
    variants = args.variants.split(",")
    rx = ReceiverProcess(0.0)
    url = f"http://127.0.0.1:{rx.port}/hook"
    results: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
    load = os.getloadavg()[0]
    try:
        for _ in range(args.repeat):  # the variants in turn: a busy minute hits them all
            for v in variants:
                env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
                out = subprocess.run([sys.executable, __file__, "--client", v, url, str(args.requests)],
                                     env=env, check=True, capture_output=True, text=True).stdout.split()
                results[v].append((float(out[0]), float(out[1])))
    finally:
        rx.close()
    print(f"# HTTP clients: {args.requests:,} requests one at a time on one keep-alive connection to a "
          f"receiver that answers at once (another process); {os.cpu_count()} cores, load average "
          f"{load:.2f} before, {os.getloadavg()[0]:.2f} after; median of {args.repeat} [range]")
    print("| client | requests/s | client CPU per request |")
    print("|---|---:|---:|")
    for v in variants:
        rates = sorted(args.requests / w for w, _ in results[v])
        cpus = sorted(c * 1e6 / args.requests for _, c in results[v])
        print(f"| {v} | {statistics.median(rates):,.0f} [{rates[0]:,.0f}-{rates[-1]:,.0f}] | "
              f"{statistics.median(cpus):.0f} µs [{cpus[0]:.0f}-{cpus[-1]:.0f}] |")


if __name__ == "__main__":
    main()
