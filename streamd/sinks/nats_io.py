"""What the nats sink and `streamd tail --nats` say to NATS, through nats-py.

Imported only where a nats sink runs (or `tail --nats`): other commands do not load
nats-py. The connection never reconnects by itself (`allow_reconnect=False`): a lost
connection fails the delivery in flight, and the sink's dispatcher retries with its
backoff, counted and shown in /readyz like any failed delivery, and reconnects then.

Security: every TLS connection is verified (against `ca`, else the system store). nats-py
upgrades to TLS only when the server's INFO asks for it, so a server (or someone in
between) that does not would get the credentials and the events in clear text: when TLS
is configured, a server that does not require it is refused before anything is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client, RawCredentials
from nats.aio.msg import Msg
from nats.js.api import StreamConfig, StreamInfo

from ..errors import JetStreamRefused, Retryable
from ..secrets import redact
from .nats_messages import Message, Stored

log = logging.getLogger("streamd.sink")

# JetStream's error codes (err_code) the sink tells apart.
WRONG_LAST = 10071  # Nats-Expected-Last-Subject-Sequence did not hold
DUPLICATE = 10201  # an atomic batch holds a Nats-Msg-Id the stream already has
TOO_LARGE_BATCH = 10199  # more messages than the server's max_batch_size
MESSAGE_TOO_LARGE = 10054  # one message over the stream's max_msg_size
STREAM_NOT_FOUND = 10059
NO_MESSAGE = 10037

_SLICE = 100  # messages encoded and flushed at a time


class _Ack(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    error: dict[str, Any] | None = None


@dataclass(frozen=True)
class ConnectOptions:
    servers: list[str]
    name: str
    timeout: float
    tls: ssl.SSLContext
    require_tls: bool
    credentials: str | None = None
    nkey_seed: str | None = None
    token: str | None = None
    user: str | None = None
    password: str | None = None


class _Client(Client):
    """nats-py's client, refusing a server that does not require TLS when TLS is configured,
    before CONNECT (which carries the credentials) is sent."""

    require_tls = False

    def _connect_command(self) -> bytes:
        if self.require_tls and not self._server_info.get("tls_required"):
            raise nats.errors.Error("the server does not require TLS, and TLS is configured "
                                    "(ca, cert or a tls:// server): refusing to send the "
                                    "credentials and the events in clear text")
        return super()._connect_command()


def describe(exc: BaseException) -> str:
    """A connection failure as an operator reads it (never a secret: nats-py's errors
    name servers and reasons only)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: the server's certificate is not trusted ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, nats.errors.AuthorizationError) or "Authorization Violation" in str(exc):
        return "authorization violation: the server refused the credentials"
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError, nats.errors.TimeoutError)):
        return "no answer in time"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).removeprefix("nats: ")
    return redact(text) or type(exc).__name__


class Connection:
    """One connection: JetStream's API, and the acks of the batches it commits."""

    def __init__(self, nc: Client, timeout: float) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=timeout)
        self.timeout = timeout
        self.lost: str | None = None  # why the connection is gone, once it is
        self._acks: dict[str, asyncio.Future[bytes]] = {}
        self._inbox = ""

    @classmethod
    async def open(cls, opts: ConnectOptions) -> Connection:
        errors: list[BaseException] = []
        conn: Connection | None = None

        async def on_error(exc: Exception) -> None:
            errors.append(exc)

        async def on_disconnect() -> None:
            if conn is not None:
                conn._gone("disconnected" + (f": {describe(errors[-1])}" if errors else ""))

        nc = _Client()
        nc.require_tls = opts.require_tls
        auth: dict[str, Any] = {}
        if opts.credentials is not None:
            auth["user_credentials"] = RawCredentials(opts.credentials)
        if opts.nkey_seed is not None:
            auth["nkeys_seed_str"] = opts.nkey_seed
        if opts.token is not None:
            auth["token"] = opts.token
        if opts.user is not None:
            auth["user"] = opts.user
            auth["password"] = opts.password or ""
        try:
            with anyio.fail_after(opts.timeout * (len(opts.servers) * 2 + 1)):
                await nc.connect(
                    servers=opts.servers, name=opts.name, tls=opts.tls, allow_reconnect=False,
                    # Each server tried twice at most, then the dispatcher's backoff decides.
                    max_reconnect_attempts=1, reconnect_time_wait=0,
                    connect_timeout=max(int(opts.timeout), 1), ping_interval=max(int(opts.timeout), 5),
                    max_outstanding_pings=2, error_cb=on_error, disconnected_cb=on_disconnect,
                    **auth)
        except Exception as exc:
            # Bounded: closing a client whose TLS handshake failed can wait for ever.
            with anyio.move_on_after(0.5), contextlib.suppress(Exception):
                await nc.close()
            why = describe(errors[-1] if errors else exc)
            raise Retryable(f"cannot connect to {', '.join(opts.servers)}: {why}") from None
        conn = cls(nc, opts.timeout)
        conn._inbox = nc.new_inbox()
        await nc.subscribe(conn._inbox + ".*", cb=conn._on_ack)
        return conn

    @property
    def server(self) -> str:
        url = self.nc.connected_url
        return f"{url.hostname}:{url.port}" if url is not None else "?"

    @property
    def max_payload(self) -> int:
        return int(self.nc.max_payload)

    def _gone(self, why: str) -> None:
        self.lost = self.lost or why
        for fut in self._acks.values():
            if not fut.done():
                fut.set_exception(ConnectionError(why))

    async def _on_ack(self, msg: Msg) -> None:
        fut = self._acks.get(msg.subject.rpartition(".")[2])
        if fut is not None and not fut.done():
            # No stream listens on the subject (deleted since the sink checked it): the
            # server answers "no responders" in a header, with no body.
            status = (msg.headers or {}).get("Status", "")
            fut.set_result(msg.data if msg.data or not status else b"no responders " + status.encode())

    async def close(self) -> None:
        self._gone("closed")
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.timeout):
            with contextlib.suppress(Exception):
                await self.nc.close()

    # ------------------------------------------------------------ JetStream API

    async def api(self, what: str, call: Any) -> Any:
        """Await a nats-py JetStream call; connection trouble becomes Retryable."""
        try:
            with anyio.fail_after(self.timeout + 1):
                return await call
        except nats.js.errors.NotFoundError:
            raise
        except nats.js.errors.APIError as exc:
            raise Retryable(f"{what}: {exc.description or exc} (err_code {exc.err_code})") from None
        except (TimeoutError, nats.errors.TimeoutError):
            self._gone(f"no answer to {what} within {self.timeout:g}s")
            raise Retryable(f"{self.server}: no answer to {what} within {self.timeout:g}s") from None
        except (nats.errors.Error, OSError) as exc:
            self._gone(describe(exc))
            raise Retryable(f"{self.server}: {what}: {describe(exc)}") from None

    async def stream_info(self, stream: str) -> StreamInfo | None:
        try:
            info: StreamInfo = await self.api(f"stream info {stream}", self.js.stream_info(stream))
        except nats.js.errors.NotFoundError:
            return None
        return info

    async def add_stream(self, config: StreamConfig) -> StreamInfo:
        info: StreamInfo = await self.api(f"creating stream {config.name}", self.js.add_stream(config))
        return info

    async def last(self, stream: str, subjects: str) -> Stored | None:
        """The stream's last message on a filter, read from the stream's leader (a direct
        get may be served by a replica that is behind)."""
        try:
            raw = await self.api(f"the last message on {subjects}",
                                 self.js.get_msg(stream, subject=subjects))
        except nats.js.errors.NotFoundError:
            return None
        return Stored(int(raw.seq or 0), dict(raw.headers or {}))

    async def get(self, stream: str, seq: int) -> Stored | None:
        try:
            raw = await self.api(f"message {seq}", self.js.get_msg(stream, seq=seq))
        except nats.js.errors.NotFoundError:
            return None
        return Stored(int(raw.seq or 0), dict(raw.headers or {}))

    # ------------------------------------------------------------ atomic batches

    def _frames(self, batch: str, messages: Sequence[Message], start: int, total: int,
                expect: int, shard_subjects: str) -> bytes:
        """Messages `start`… (1-based) of a batch of `total`, as HPUB frames: each message's
        own header lines, and the batch's."""
        out = []
        tag = batch.encode()
        for i, m in enumerate(messages, start):
            head = b"NATS/1.0\r\nNats-Batch-Id: %s\r\nNats-Batch-Sequence: %d\r\n%s" % (tag, i, m.head)
            reply = b""
            if i == 1:
                head += b"Nats-Expected-Last-Subject-Sequence: %d\r\n" \
                        b"Nats-Expected-Last-Subject-Sequence-Subject: %s\r\n" % (
                            expect, shard_subjects.encode())
            if i == total:
                head += b"Nats-Batch-Commit: 1\r\n"
                reply = f" {self._inbox}.{batch}".encode()
            head += b"\r\n"
            out.append(b"HPUB %s%s %d %d\r\n%s%s\r\n" % (
                m.subject.encode(), reply, len(head), len(head) + len(m.body), head, m.body))
        return b"".join(out)

    async def _write(self, batch: str, messages: Sequence[Message], expect: int,
                     shard_subjects: str) -> None:
        """Send the batch in slices, each flushed before the next is encoded, so the
        server stages the first messages while the rest are made (measured: the same
        batch sent whole at the end was a third slower). Not through nats-py's `publish`,
        which checks every header of every message again (half the sink's CPU, measured):
        the sink's subjects and headers are safe by construction (`subjects`,
        `header_lines`), so each slice goes to nats-py's send queue as one command."""
        total = len(messages)
        for start in range(0, total, _SLICE):
            frames = self._frames(batch, messages[start:start + _SLICE], start + 1, total, expect,
                                  shard_subjects)
            await self.nc._send_command(frames)
            await self.nc._flush_pending()
            await asyncio.sleep(0)  # let nats-py's flusher write it

    async def commit(self, batch: str, messages: Sequence[Message], *, expect: int,
                     shard_subjects: str) -> int:
        """Publish `messages` as one atomic batch that the stream stores only if the last
        message on `shard_subjects` is still at stream seq `expect`; return the stream seq
        of its last message. Raises JetStreamRefused (the stream said no: nothing stored),
        or Retryable when no answer came (stored, or not: the caller must ask)."""
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._acks[batch] = fut
        last = len(messages)
        try:
            if self.lost or not self.nc.is_connected:
                raise ConnectionError(self.lost or "not connected")
            await self._write(batch, messages, expect, shard_subjects)
            with anyio.fail_after(self.timeout):
                data = await fut
        except TimeoutError:
            self._gone(f"no answer within {self.timeout:g}s")
            raise Retryable(f"{self.server}: no ack for a batch of {last} within "
                            f"{self.timeout:g}s") from None
        except (nats.errors.Error, OSError) as exc:
            self._gone(describe(exc))
            raise Retryable(f"{self.server}: connection lost while publishing "
                            f"({describe(exc)})") from None
        finally:
            self._acks.pop(batch, None)
        if data.startswith(b"no responders") or not data:
            raise Retryable(f"{self.server}: no stream took the batch ({data.decode() or 'no answer'}):"
                            " was the stream deleted?")
        ack = msgspec.json.decode(data, type=_Ack)
        if ack.error is not None:
            raise JetStreamRefused(int(ack.error.get("err_code", 0) or 0),
                          str(ack.error.get("description", "refused")))
        return ack.seq
