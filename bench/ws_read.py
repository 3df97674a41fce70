"""What reading one Asteria frame costs the source's side of the websocket: TLS, the
websockets client, the hand-off to the committer; the server's cost left out.

    python bench/ws_read.py                      # CPU per frame, each way of reading, 3 rounds
    python bench/ws_read.py --callgrind          # instructions per frame (load-independent)
    python bench/ws_read.py --ways recv --max-queue 64 --frames 50000

This process serves the gateway's side with no websockets code in it: mutual TLS (the
throwaway certificates), the upgrade answered by hand, then N seed-shaped frames written
one `write` each (one TLS record each, as a gateway sending message by message does).
A child process is the client, reading them as the source does and handing each to a
consumer task through an anyio memory stream (batches of at most 500, as the committer
takes them; the consumer does nothing else), and prints its CPU per frame from the upgrade
to the last frame. Ways of reading (`--ways`):

- `iter`: `async for message in ws`, each text frame's str encoded back to bytes (the
  source until issue 18);
- `recv`: `await ws.recv(decode=False)`, the bytes as they came (the source now).

With --callgrind the child runs under `valgrind --tool=callgrind` twice, for N and 6N
frames: the difference over 5N frames is the instructions per frame, start-up and the
handshake left out. Under callgrind the client is far slower than the server, so it
always finds many frames waiting: the cost per frame of a source that is the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import re
import resource
import shutil
import ssl
import sys
import tempfile
from pathlib import Path

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frames(n: int) -> list[bytes]:
    """n seed-shaped frames, each with its websocket header (a text frame, unmasked)."""
    from streamd.providers.asteria import simulator, wire

    made = [wire.encode_frame(*simulator.event(i, profile="seed")) for i in range(min(n, 3000))]
    out = []
    for i in range(n):
        p = made[i % len(made)]
        head = bytes([0x81, len(p)]) if len(p) < 126 else bytes([0x81, 126]) + len(p).to_bytes(2, "big")
        out.append(head + p)
    return out


async def serve(ctx: ssl.SSLContext, payload: list[bytes], port: asyncio.Future[int]) -> None:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        request = await r.readuntil(b"\r\n\r\n")
        key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())  # noqa: S324 - RFC 6455
        w.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        try:
            for i, f in enumerate(payload):
                w.write(f)
                if i % 64 == 0:
                    await w.drain()
            await w.drain()
            await r.read()  # until the client goes
        except (ConnectionError, ssl.SSLError):
            pass  # the client had read what it wanted
        w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    port.set_result(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


def child(way: str, n: int, port: int, certs: list[str], max_queue: int) -> None:
    import anyio
    from websockets.asyncio.client import connect

    ca, cert, key = certs
    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(cert, key)

    async def consumer(rx: anyio.abc.ObjectReceiveStream[bytes]) -> None:
        async for first in rx:
            batch = [first]
            while len(batch) < 500:
                try:
                    batch.append(rx.receive_nowait())
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break

    async def main() -> None:
        tx, rx = anyio.create_memory_object_stream[bytes](500)

        async def send(data: bytes) -> None:  # as the source hands a frame on
            try:
                tx.send_nowait(data)
            except anyio.WouldBlock:
                await tx.send(data)

        async with connect(f"wss://localhost:{port}", ssl=ctx, compression=None, ping_interval=None,
                           max_size=1 << 20, max_queue=max_queue) as ws:
            t0 = resource.getrusage(resource.RUSAGE_SELF)
            async with anyio.create_task_group() as tg:
                tg.start_soon(consumer, rx)
                got = 0
                if way == "iter":
                    async for message in ws:
                        data = message.encode() if isinstance(message, str) else message
                        await send(data)
                        got += 1
                        if got == n:
                            break
                else:
                    recv = ws.recv
                    while got < n:
                        await send(await recv(False))
                        got += 1
                tx.close()
            t1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = t1.ru_utime - t0.ru_utime + t1.ru_stime - t0.ru_stime
        print(f"{cpu / n * 1e6:.2f}")

    asyncio.run(main())


async def run_child(way: str, n: int, port: int, certs: list[str], max_queue: int,
                    callgrind: bool) -> tuple[float, int]:
    cmd = [sys.executable, __file__, "--child", way, str(n), str(port), *certs, str(max_queue)]
    if callgrind:
        cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *cmd]
    pipe = asyncio.subprocess.PIPE
    p = await asyncio.create_subprocess_exec(*cmd, stdout=pipe, stderr=pipe)
    out, err = await p.communicate()
    if p.returncode:
        raise SystemExit(f"the client failed: {err.decode()[-2000:]}")
    found = re.search(r"Collected : (\d+)", err.decode())
    return float(out.decode()), int(found.group(1)) if found else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    ap.add_argument("--ways", default="iter,recv", help="comma-separated: iter, recv")
    ap.add_argument("--frames", type=int, default=100_000, help="frames a run (--callgrind: 4,000 and 6x)")
    ap.add_argument("--rounds", type=int, default=3, help="each way in turn, this many times")
    ap.add_argument("--max-queue", type=int, default=16, help="the client's max_queue (the source's: 16)")
    ap.add_argument("--callgrind", action="store_true", help="instructions per frame instead of CPU")
    ap.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        way, n, port, ca, cert, key, max_queue = args.child
        child(way, int(n), int(port), [ca, cert, key], int(max_queue))
        return
    if args.callgrind and not shutil.which("valgrind"):
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    from streamd.certs import make

    ways = args.ways.split(",")
    with tempfile.TemporaryDirectory(prefix="streamd-ws-read-") as tmp:
        certs = make(Path(tmp))
        paths = [str(certs.ca), str(certs.client_cert), str(certs.client_key)]
        n = 4000 if args.callgrind and args.frames == ap.get_default("frames") else args.frames
        sizes = (n, 6 * n) if args.callgrind else (n,)

        async def go() -> None:
            port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            server = asyncio.create_task(serve(certs.server_context(), frames(max(sizes)), port))
            await port
            for r in range(args.rounds):
                for way in ways:
                    got = [await run_child(way, k, port.result(), paths, args.max_queue, args.callgrind)
                           for k in sizes]
                    if args.callgrind:
                        per = (got[1][1] - got[0][1]) / (sizes[1] - sizes[0])
                        print(f"round {r + 1}: {way}: {per:,.0f} instructions per frame", flush=True)
                    else:
                        print(f"round {r + 1}: {way}: {got[0][0]:.2f} µs of CPU per frame "
                              f"(load average {_load()})", flush=True)
            server.cancel()

        asyncio.run(go())


def _load() -> str:
    return f"{Path('/proc/loadavg').read_text().split()[0]}" if Path("/proc/loadavg").exists() else "?"


if __name__ == "__main__":
    main()
