"""`type = "sftp"`: files on an SFTP server, for a system that picks them up from a
directory (docs/sinks/sftp.md).

This module is the transport; what the files hold is the sink's `format`
(`file_format`): by default the documents an ERP books of HORISEN's invoices, as XML
(`invoice_files`), or each batch's feed lines (`jsonl_files`). The format turns a batch
into files, in chains whose files go in order, and says whether a file already at a name
is the one it would write.

Names come from the `filename` template (`filenames`): escaped, never collapsed, so two
files never share one. Each file is written as `.<name>.streamd-<sink>.part`, fsynced
(`fsync@openssh.com`, where the server has it) and renamed to `<name>`, so a reader
never sees half a file. The rename is SFTP's own, which refuses an existing name: no
file is ever replaced. A chain's files are written in order, one after the other; up
to `concurrency` chains at once on the one SFTP channel. The batch is done when all are
renamed, and otherwise fails whole.

What is at a name already decides what happens: the same file (the format reads its
head) → skipped, so a redelivered batch (after a crash between the upload and the
offset commit, or a retry after a partial failure) writes nothing twice; anything else
(another document, a file streamd did not write) → never touched: the event is refused
(`Permanent`, so it ends in dead letters naming the file), the rest of its chain in the
batch is not written, and `streamd_sink_sftp_name_conflicts_total` counts it once.

Only the sink's own leftover `.part` files (of a crashed run) are removed on (re)connect;
another uploader's are left alone. The server's host key is always verified against
`known_hosts`. Connection, authentication and I/O failures are retryable: the dispatcher
backs off, keeps its offset, and the next attempt reconnects.
"""

from __future__ import annotations

import logging
import posixpath
from collections import OrderedDict
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

import anyio
import asyncssh

from ..errors import Permanent, Retryable
from ..metrics import Metrics
from ..store import FeedEvent, SinkState
from .base import Sink, SinkSpec, StateLoader
from .file_format import FileFormat, OutFile
from .filenames import is_own_part, part_name
from .invoice_files import InvoiceDocuments
from .jsonl_files import JsonLines
from .sftp_config import (
    SftpSinkConfig,
    _import_key,
    _load_known_hosts,
    _os_reason,
    _reason,
    _validate,
)

__all__ = ["SPEC", "SftpSink", "SftpSinkConfig", "_validate"]

log = logging.getLogger("streamd.sink")

T = TypeVar("T")

_COUNTED = 10_000  # conflicting files' identities remembered, so that each is counted once


# ---------------------------------------------------------------- the sink

def file_format(name: str, cfg: SftpSinkConfig) -> FileFormat:
    """The format the sink's table chose (`sftp_config.FORMATS`), for this sink."""
    if cfg.format == "jsonl":
        return JsonLines(name, cfg.filename)
    # More than the two batches whose state may not be committed yet (`ledger`).
    return InvoiceDocuments(name, cfg.filename, payments=cfg.payments,
                            capacity=max(10_000, 4 * cfg.batch_max))


class SftpSink(Sink):
    def __init__(self, name: str, cfg: SftpSinkConfig) -> None:
        self.name = name
        self.cfg = cfg
        self.where = f"{cfg.host}:{cfg.port}"
        self.files_written = 0
        self.files_skipped = 0
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._key: asyncssh.SSHKey | None = None
        self._present: set[str] = set()  # file names in the directory (listed, or written since)
        self._fsync_ok = True
        self._conflicts: Any = None  # the metric's series, once attached
        self._counted: OrderedDict[str, None] = OrderedDict()  # identities counted in it, latest last
        self.format = file_format(name, cfg)
        self.stable_batches = self.format.stable_batches

    def attach_metrics(self, metrics: Metrics) -> None:
        self._conflicts = metrics.sink_sftp_name_conflicts.labels(self.name)
        self.format.attach_metrics(metrics)

    def attach_state(self, load: StateLoader) -> None:
        self.format.attach_state(load)

    def take_state(self) -> list[SinkState]:
        return self.format.take_state()

    def __repr__(self) -> str:
        return f"SftpSink({self.name!r}, {self.cfg.username}@{self.where}:{self.cfg.directory})"

    def _path(self, name: str) -> str:
        return posixpath.join(self.cfg.directory, name)

    async def _op(self, aw: Awaitable[T]) -> T:
        with anyio.fail_after(self.cfg.timeout.seconds):
            return await aw

    # ------------------------------------------------------------ connection

    async def _client(self) -> asyncssh.SFTPClient:
        """The SFTP client, connecting (and preparing the directory) when there is none."""
        if self._sftp is not None and self._conn is not None and not self._conn.is_closed():
            return self._sftp
        await self._drop()
        conn = await self._connect()
        try:
            with anyio.fail_after(self.cfg.timeout.seconds):
                sftp = await conn.start_sftp_client()
        except BaseException as exc:
            conn.close()
            await self._wait_closed(conn)
            if not isinstance(exc, (asyncssh.Error, OSError)):
                raise
            what = "no answer" if isinstance(exc, TimeoutError) else _reason(exc)
            raise Retryable(f"{self.where}: cannot start SFTP ({what})") from None
        self._conn, self._sftp = conn, sftp
        try:
            await self._prepare(sftp)
        except Exception as exc:
            error, _ = self._failure(exc, f"preparing {self.cfg.directory}")
            await self._drop()
            raise error from None
        log.info("sink %s: connected to %s as %s; %s holds %d files", self.name, self.where,
                 self.cfg.username, self.cfg.directory, len(self._present))
        return sftp

    async def _connect(self) -> asyncssh.SSHClientConnection:
        cfg = self.cfg
        try:
            known = await anyio.to_thread.run_sync(_load_known_hosts, cfg.known_hosts)
        except OSError as exc:
            raise Retryable(f"{self.where}: cannot read known_hosts {cfg.known_hosts} "
                            f"({exc.strerror or type(exc).__name__})") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise Retryable(f"{self.where}: known_hosts {cfg.known_hosts} is not usable "
                            f"({_reason(exc)})") from None
        auth: dict[str, Any]
        if cfg.private_key is not None:
            if self._key is None:
                try:
                    self._key = await anyio.to_thread.run_sync(_import_key, cfg)
                except (asyncssh.KeyImportError, ValueError) as exc:
                    raise Retryable(f"{self.where}: private_key {cfg.private_key.reference} "
                                    f"cannot be used ({_reason(exc)})") from None
            auth = {"client_keys": [self._key]}
        else:
            assert cfg.password is not None
            auth = {"client_keys": None, "password": cfg.password.reveal()}
        try:
            return await asyncssh.connect(
                cfg.host, cfg.port, username=cfg.username, known_hosts=known,
                connect_timeout=cfg.timeout.seconds, login_timeout=cfg.timeout.seconds,
                # Nothing from ~/.ssh or the environment: only what the config says.
                config=[], agent_path=None, x509_trusted_certs=None, x509_trusted_cert_paths=None,
                gss_host=None, **auth)
        except asyncssh.HostKeyNotVerifiable as exc:
            raise Retryable(f"{self.where}: host key not verifiable with known_hosts "
                            f"{cfg.known_hosts} ({exc.reason})") from None
        except asyncssh.PermissionDenied:
            raise Retryable(f"{self.where}: authentication refused for user {cfg.username!r}") from None
        except asyncssh.Error as exc:
            raise Retryable(f"{self.where}: SSH connection failed ({_reason(exc)})") from None
        except TimeoutError:
            raise Retryable(f"{self.where}: no SSH connection within {cfg.timeout}") from None
        except OSError as exc:
            raise Retryable(f"{self.where}: cannot connect ({_os_reason(exc)})") from None

    async def _prepare(self, sftp: asyncssh.SFTPClient) -> None:
        """mkdir -p the directory, remove our own leftover temporary files, list what is there."""
        directory = self.cfg.directory
        await self._op(sftp.makedirs(directory, exist_ok=True))
        names = [str(n) for n in await self._op(sftp.listdir(directory))]
        present = set()
        others = 0
        for name in names:
            if is_own_part(name, self.name):
                log.info("sink %s: removing %s, left over from an interrupted upload", self.name,
                         self._path(name))
                try:
                    await self._op(sftp.remove(self._path(name)))
                except asyncssh.SFTPNoSuchFile:
                    pass
            elif name.startswith("."):  # never a name of ours (`filenames`): another's, left alone
                others += name.endswith(".part")
            else:
                present.add(name)
        if others:
            log.info("sink %s: %s holds %d .part files that are not this sink's; left alone",
                     self.name, directory, others)
        self._present = present

    async def _wait_closed(self, conn: asyncssh.SSHClientConnection) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.cfg.timeout.seconds):
            await conn.wait_closed()

    async def _drop(self) -> None:
        sftp, conn = self._sftp, self._conn
        self._sftp = self._conn = None
        if sftp is not None:
            sftp.exit()
        if conn is not None:
            conn.close()
            await self._wait_closed(conn)

    def _failure(self, exc: BaseException, what: str) -> tuple[Retryable, str]:
        """The Retryable for a failure, and what becomes of the connection: "keep" it,
        "drop" it, or it was "lost" (closed by the server or the network)."""
        if isinstance(exc, Retryable):
            return exc, "keep"
        if isinstance(exc, (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection,
                            asyncssh.DisconnectError, ConnectionError)):
            return Retryable(f"{self.where}: connection lost while {what}"), "lost"
        if isinstance(exc, asyncssh.SFTPError):
            # Permission denied, no such directory, disk full: an operator can fix those.
            return Retryable(f"{self.where}: {what}: {_reason(exc)}"), "keep"
        if isinstance(exc, TimeoutError):
            return Retryable(f"{self.where}: {what}: no answer within {self.cfg.timeout}"), "drop"
        if isinstance(exc, asyncssh.Error):
            return Retryable(f"{self.where}: {what}: {_reason(exc)}"), "drop"
        if isinstance(exc, OSError):
            return Retryable(f"{self.where}: {what}: {_os_reason(exc)}"), "drop"
        return Retryable(f"{self.where}: {what}: {type(exc).__name__}: {exc}"), "drop"

    # ------------------------------------------------------------ delivery

    async def recover(self) -> int:
        await self._client()
        return 0

    def _conflict(self, f: OutFile, held: str) -> str:
        """Count a file not written because its name is taken, once however often it is
        tried (a refused batch is split, and the event retried); the reason it is refused."""
        reason = (f"event {f.event.id} (seq {f.event.seq}): {self._path(f.name)} already holds {held}; "
                  f"not replaced (the file names come from filename = {self.cfg.filename!r})")
        if f.identity not in self._counted:
            self._counted[f.identity] = None
            if len(self._counted) > _COUNTED:
                self._counted.popitem(last=False)
            if self._conflicts is not None:
                self._conflicts.inc()
            log.warning("sink %s: %s", self.name, reason)
        return reason

    async def deliver(self, events: Sequence[FeedEvent]) -> None:
        plan = await self.format.plan(events)
        chains = plan.chains
        # Two files of one name in this batch: the later is refused, and what follows it
        # in its chain is not written.
        names: dict[str, OutFile] = {}
        clashes: list[str] = []
        kept: list[list[OutFile]] = []
        for chain in chains:
            for i, f in enumerate(chain):
                earlier = names.get(f.name)
                if earlier is not None:
                    clashes.append(self._conflict(f, f"{earlier.title} (seq {earlier.event.seq}, "
                                                     "another in this batch)"))
                    chain = chain[:i]
                    break
                names[f.name] = f
            if chain:
                kept.append(chain)
        conflicts: list[str] = []
        if kept:
            reused = self._sftp is not None
            sftp = await self._client()
            failure = await self._write_all(sftp, kept, conflicts)
            if failure is not None and failure[1] == "lost" and reused:
                # Servers close idle connections: reconnect once at once (what is already
                # there is skipped) rather than count a failure and back off.
                log.info("sink %s: %s closed the connection; reconnecting", self.name, self.where)
                await self._drop()
                conflicts = []
                failure = await self._write_all(await self._client(), kept, conflicts)
            if failure is not None:
                error, action = failure
                if action != "keep":
                    await self._drop()
                raise error
        refused = clashes + conflicts
        if refused:
            more = f" (and {len(refused) - 1} more in this batch)" if len(refused) > 1 else ""
            raise Permanent(refused[0] + more)
        plan.done()

    async def _write_all(self, sftp: asyncssh.SFTPClient, chains: list[list[OutFile]],
                         conflicts: list[str]) -> tuple[Retryable, str] | None:
        """Write every chain's files in order, `concurrency` chains at a time, adding to
        `conflicts` the first of a chain's whose name is taken (the rest of that chain's
        are not written); the first failure (the rest are cancelled), or None when all
        are done."""
        pending = iter(chains)
        failures: list[tuple[Retryable, str]] = []

        async def worker(scope: anyio.CancelScope) -> None:
            for chain in pending:
                for f in chain:
                    try:
                        conflict = await self._put(sftp, f)
                    except Exception as exc:
                        failures.append(self._failure(exc, f"writing {self._path(f.name)}"))
                        scope.cancel()
                        return
                    if conflict is not None:
                        conflicts.append(conflict)
                        break

        async with anyio.create_task_group() as tg:
            for _ in range(min(self.cfg.concurrency, len(chains))):
                tg.start_soon(worker, tg.cancel_scope)
        return failures[0] if failures else None

    def _skipped(self, f: OutFile) -> None:
        self.files_skipped += 1
        log.info("sink %s: %s already holds %s (%s); not written again",
                 self.name, self.where, f.name, f.title)

    async def _put(self, sftp: asyncssh.SFTPClient, f: OutFile) -> str | None:
        """Write `f` unless its name is taken by another file: then the reason."""
        path = self._path(f.name)
        if f.name in self._present:
            head = await self._existing(sftp, path, f)
            if head is not None:  # else taken away since: write it again
                held = self.format.held(head, f)
                if held is not None:
                    return self._conflict(f, held)
                self._skipped(f)
                return None
        tmp = self._path(part_name(f.name, self.name))
        handle = await self._op(sftp.open(tmp, "wb"))
        try:
            await self._op(handle.write(f.data))
            if self.cfg.fsync and self._fsync_ok:
                try:
                    await self._op(handle.fsync())
                except asyncssh.SFTPOpUnsupported:
                    self._fsync_ok = False
                    log.warning("sink %s: %s does not support fsync@openssh.com; files are renamed "
                                "into place without it", self.name, self.where)
        except BaseException:
            await self._close_quietly(handle)
            raise
        await self._op(handle.close())
        try:
            # SFTP's own rename refuses an existing name: nothing that appeared since the
            # listing (another uploader's file, the ERP's) is replaced unseen, nor ever
            # a file this sink wrote.
            await self._op(sftp.rename(tmp, path))
        except asyncssh.SFTPError:
            head = await self._existing(sftp, path, f)
            if head is None:
                raise  # the rename failed for another reason
            self._present.add(f.name)
            await self._remove_quietly(sftp, tmp)
            held = self.format.held(head, f)
            if held is None:
                self._skipped(f)
                return None
            return self._conflict(f, held)
        self._present.add(f.name)
        self.files_written += 1
        self.format.written(f)
        return None

    async def _existing(self, sftp: asyncssh.SFTPClient, path: str, f: OutFile) -> bytes | None:
        """The head of the file at `path`, as much as the format needs to tell whether it
        is `f`; None when there is none."""
        try:
            handle = await self._op(sftp.open(path, "rb"))
        except asyncssh.SFTPNoSuchFile:
            return None
        try:
            head = await self._op(handle.read(self.format.head_size(f)))
        finally:
            await self._close_quietly(handle)
        return head if isinstance(head, bytes) else head.encode()

    async def _remove_quietly(self, sftp: asyncssh.SFTPClient, path: str) -> None:
        try:
            await self._op(sftp.remove(path))
        except asyncssh.SFTPError as exc:  # left for the next connect to clear up
            log.info("sink %s: cannot remove %s (%s)", self.name, path, _reason(exc))

    async def _close_quietly(self, handle: asyncssh.SFTPClientFile) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.cfg.timeout.seconds):
            try:
                await handle.close()
            except (asyncssh.Error, OSError):
                pass

    async def aclose(self) -> None:
        await self._drop()


def _build(name: str, cfg: SftpSinkConfig) -> SftpSink:
    return SftpSink(name, cfg)


SPEC = SinkSpec(config=SftpSinkConfig, build=_build, validate=_validate, path_fields=("known_hosts",))
