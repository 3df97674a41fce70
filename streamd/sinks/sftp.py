"""`type = "sftp"`: each invoice event as one XML file on an SFTP server (docs/sinks/sftp.md).

Made for handing HORISEN invoices to an ERP that picks files up from a directory:
by default the sink takes `invoice.created` events of the `horisen` provider, renders
each as `docs/horisen-invoice.xsd` XML (`invoice_xml`) and writes it as
`{tenant}-{number}.xml`.

Names come from the `filename` template (`filenames`): escaped, never collapsed, so two
invoices never share one. Each file is written as `.<name>.streamd-<sink>.part`, fsynced
(`fsync@openssh.com`, where the server has it) and renamed to `<name>`, so a reader never
sees half a file. The rename is SFTP's own, which refuses an existing name: a file that
appeared since the directory was listed is never replaced unseen. Up to `concurrency`
files of a batch are in flight at once on the one SFTP channel; the batch is done when
all are renamed, and otherwise fails whole.

What is at a name already decides what happens (its root's `eventId`, `provider`,
`tenant` and `key`): the same event → skipped, so a redelivered batch (after a crash
between the upload and the offset commit, or a retry after a partial failure) writes
nothing twice; another event of the same invoice (an update, when `match` takes them) →
replaced (`posix-rename@openssh.com`: atomic); anything else (another invoice's file, a
file streamd did not write) → never touched: the event is refused (`Permanent`, so it
ends in dead letters naming the file) and `streamd_sink_sftp_name_conflicts_total` counts it
once.

Only the sink's own leftover `.part` files (of a crashed run) are removed on (re)connect;
another uploader's are left alone. The server's host key is always verified against
`known_hosts`. Connection, authentication and I/O failures are retryable: the dispatcher
backs off, keeps its offset, and the next attempt reconnects.
"""

from __future__ import annotations

import logging
import os
import posixpath
import socket
from collections import OrderedDict
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
import asyncssh
import msgspec

from ..config import Match, SinkConfig
from ..errors import Permanent, Rejected, Retryable
from ..metrics import Metrics
from ..model import Invoice
from ..model.check import checked
from ..model.fields import DECODE_ERRORS
from ..secrets import Secret
from ..store import FeedEvent
from ..units import Duration
from . import invoice_xml
from .base import Sink, SinkSpec
from .filenames import Template, is_own_part, part_name

log = logging.getLogger("streamd.sink")

T = TypeVar("T")

FIELDS = ("tenant", "number", "documentNumber", "key", "id", "seq", "source", "op", "issued")
#: One of these tells one invoice's file from another's; a template without any would
#: give every invoice of a tenant (or of a day, an operation) one name.
DISTINCT = ("number", "documentNumber", "key", "id", "seq")
_HEAD = 4096  # bytes of an existing file read to find its root's attributes
_COUNTED = 10_000  # conflicting event ids remembered, so that each is counted once


class SftpSinkConfig(SinkConfig, frozen=True, forbid_unknown_fields=True, kw_only=True):
    host: str
    port: int = 22
    username: str
    # The client key's text (OpenSSH or PEM), or a password: exactly one of the two.
    private_key: Secret | None = None
    passphrase: Secret | None = None
    password: Secret | None = None
    # OpenSSH known_hosts file holding the server's host key; there is no way to skip it.
    known_hosts: str
    directory: str = "."
    filename: str = "{tenant}-{number}.xml"
    match: Match = Match(provider=["horisen"], type=["invoice.created"])
    fsync: bool = True
    # Connecting, and each SFTP request after that.
    timeout: Duration = Duration(30.0)
    concurrency: int = 8
    batch_max: int = 100


# ---------------------------------------------------------------- file names

def template_problem(template: str) -> str | None:
    """Why a `filename` template cannot be used, or None."""
    parsed = Template(template, FIELDS)
    if parsed.problem:
        return parsed.problem
    if not any(f.name in DISTINCT for f in parsed.fields):
        return ("needs one of " + ", ".join("{" + f + "}" for f in DISTINCT)
                + ", or two invoices could get one name")
    try:
        parsed.render(_SAMPLE)
    except (ValueError, TypeError) as exc:
        return f"cannot be rendered ({exc})"
    return None


_SAMPLE: dict[str, Any] = {
    "tenant": "acme", "number": "INV-1", "documentNumber": "INV-1", "key": "k1", "id": "0" * 32,
    "seq": 1, "source": "horisen", "op": "created", "issued": "2026-01-01",
}


def file_name(template: str | Template, event: FeedEvent, invoice: Invoice) -> str:
    # An invoice without a number is named by its key: an empty {number} would make
    # every such invoice of a tenant overwrite the previous one.
    number = invoice.number or event.key
    parsed = template if isinstance(template, Template) else Template(template, FIELDS)
    return parsed.render({
        "tenant": event.tenant, "number": number, "documentNumber": number, "key": event.key,
        "id": event.id, "seq": event.seq, "source": event.source, "op": event.op,
        "issued": invoice.issued.isoformat() if invoice.issued else ""})


# ---------------------------------------------------------------- validation

def _validate(cfg: SftpSinkConfig) -> list[str]:
    problems = []
    if not cfg.host:
        problems.append("host: must not be empty")
    if not 1 <= cfg.port <= 65535:
        problems.append("port: must be between 1 and 65535")
    if not cfg.username:
        problems.append("username: must not be empty")
    if cfg.private_key is None and cfg.password is None:
        problems.append("private_key: missing required key (or set password instead)")
    elif cfg.private_key is not None and cfg.password is not None:
        problems.append("private_key, password: set one of them, not both")
    if cfg.passphrase is not None and cfg.private_key is None:
        problems.append("passphrase: only used with private_key")
    if cfg.private_key is not None:
        try:
            _import_key(cfg)
        except (asyncssh.KeyImportError, ValueError) as exc:
            # asyncssh's messages say what is wrong with the key, never what it holds.
            problems.append(f"private_key: {cfg.private_key.reference} is not a private key "
                            f"streamd can use ({_reason(exc)})")
    if not cfg.known_hosts:
        problems.append("known_hosts: must name an OpenSSH known_hosts file")
    else:
        problem = _known_hosts_problem(cfg.known_hosts)
        if problem:
            problems.append(f"known_hosts: {problem}")
    if not cfg.directory:
        problems.append("directory: must not be empty (\".\" is the login directory)")
    problem = template_problem(cfg.filename)
    if problem:
        problems.append(f"filename: {problem}")
    if cfg.timeout.seconds <= 0:
        problems.append("timeout: must be more than 0")
    if not 1 <= cfg.concurrency <= 64:
        problems.append("concurrency: must be between 1 and 64")
    return problems


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _os_reason(exc: OSError) -> str:
    # asyncio says "Connect call failed ('10.0.0.1', 22)"; the errno says "Connection refused".
    if not isinstance(exc, socket.gaierror) and exc.errno and exc.errno > 0:
        return os.strerror(exc.errno)
    return exc.strerror or _reason(exc)


def _import_key(cfg: SftpSinkConfig) -> asyncssh.SSHKey:
    assert cfg.private_key is not None
    passphrase = cfg.passphrase.reveal() if cfg.passphrase is not None else None
    return asyncssh.import_private_key(cfg.private_key.reveal(), passphrase)


def _load_known_hosts(path: str) -> asyncssh.SSHKnownHosts:
    text = Path(path).read_text(encoding="utf-8")
    if not any(line.strip() and not line.lstrip().startswith("#") for line in text.splitlines()):
        raise ValueError("holds no host key")
    return asyncssh.import_known_hosts(text)


def _known_hosts_problem(path: str) -> str | None:
    hint = "(write it with `ssh-keyscan -p PORT HOST`, then check the fingerprint)"
    try:
        _load_known_hosts(path)
    except FileNotFoundError:
        return f"{path} does not exist {hint}"
    except OSError as exc:
        return f"{path} cannot be read ({exc.strerror or type(exc).__name__})"
    except (ValueError, UnicodeDecodeError) as exc:
        return f"{path} is not a usable known_hosts file ({_reason(exc)}) {hint}"
    return None


# ---------------------------------------------------------------- the sink

@dataclass(frozen=True)
class _File:
    name: str
    event: FeedEvent
    data: bytes


def _same_invoice(a: FeedEvent, b: FeedEvent) -> bool:
    return (a.provider, a.tenant, a.key) == (b.provider, b.tenant, b.key)


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
        self._posix_rename_ok = True
        self._conflicts: Any = None  # the metric's series, once attached
        self._counted: OrderedDict[str, None] = OrderedDict()  # event ids counted in it, latest last
        self._template = Template(cfg.filename, FIELDS)

    def attach_metrics(self, metrics: Metrics) -> None:
        self._conflicts = metrics.sink_sftp_name_conflicts.labels(self.name)

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

    def _file(self, event: FeedEvent) -> _File:
        if event.entity != "invoice":
            raise Permanent(f"event {event.id} (seq {event.seq}) is a {event.entity}, not an invoice")
        try:
            # The feed's checks again: an event appended before they bounded amounts could
            # hold `1E-999999999`, a billion zeros when written out.
            invoice = checked(msgspec.json.decode(event.data, type=Invoice))
            data = invoice_xml.render(event, invoice)
            name = file_name(self._template, event, invoice)
        except Rejected as exc:
            raise Permanent(f"event {event.id} (seq {event.seq}) holds no usable invoice: {exc.reason}") \
                from None
        except (*DECODE_ERRORS, ValueError, TypeError) as exc:
            raise Permanent(f"event {event.id} (seq {event.seq}) holds no usable invoice: {exc}") from None
        return _File(name, event, data)

    def _conflict(self, f: _File, held: str) -> str:
        """Count an event not written because its name is taken, once however often it is
        tried (a refused batch is split, and the event retried); the reason it is refused."""
        reason = (f"event {f.event.id} (seq {f.event.seq}): {self._path(f.name)} already holds {held}; "
                  f"not replaced (the file names come from filename = {self.cfg.filename!r})")
        if f.event.id not in self._counted:
            self._counted[f.event.id] = None
            if len(self._counted) > _COUNTED:
                self._counted.popitem(last=False)
            if self._conflicts is not None:
                self._conflicts.inc()
            log.warning("sink %s: %s", self.name, reason)
        return reason

    async def deliver(self, events: Sequence[FeedEvent]) -> None:
        # Within a batch, a later event of the same invoice supersedes an earlier one; an
        # event of another invoice with the same name is refused.
        files: dict[str, _File] = {}
        clashes: list[str] = []
        for event in events:
            f = self._file(event)
            earlier = files.get(f.name)
            if earlier is not None and not _same_invoice(earlier.event, event):
                clashes.append(self._conflict(f, f"the file of event {earlier.event.id} (seq "
                                                 f"{earlier.event.seq}, another invoice in this batch)"))
                continue
            files.pop(f.name, None)
            files[f.name] = f
        conflicts: list[str] = []
        if files:
            reused = self._sftp is not None
            sftp = await self._client()
            failure = await self._write_all(sftp, list(files.values()), conflicts)
            if failure is not None and failure[1] == "lost" and reused:
                # Servers close idle connections: reconnect once at once (what is already
                # there is skipped) rather than count a failure and back off.
                log.info("sink %s: %s closed the connection; reconnecting", self.name, self.where)
                await self._drop()
                conflicts = []
                failure = await self._write_all(await self._client(), list(files.values()), conflicts)
            if failure is not None:
                error, action = failure
                if action != "keep":
                    await self._drop()
                raise error
        refused = clashes + conflicts
        if refused:
            more = f" (and {len(refused) - 1} more in this batch)" if len(refused) > 1 else ""
            raise Permanent(refused[0] + more)

    async def _write_all(self, sftp: asyncssh.SFTPClient, files: list[_File],
                         conflicts: list[str]) -> tuple[Retryable, str] | None:
        """Write every file, `concurrency` at a time, adding to `conflicts` those whose name
        is taken; the first failure (the rest are cancelled), or None when all are done."""
        pending = iter(files)
        failures: list[tuple[Retryable, str]] = []

        async def worker(scope: anyio.CancelScope) -> None:
            for f in pending:
                try:
                    conflict = await self._put(sftp, f)
                except Exception as exc:
                    failures.append(self._failure(exc, f"writing {self._path(f.name)}"))
                    scope.cancel()
                    return
                if conflict is not None:
                    conflicts.append(conflict)

        async with anyio.create_task_group() as tg:
            for _ in range(min(self.cfg.concurrency, len(files))):
                tg.start_soon(worker, tg.cancel_scope)
        return failures[0] if failures else None

    def _verdict(self, f: _File, root: invoice_xml.Root | None) -> str | None:
        """What to do with `f` where a file with this root is: "skip" (it is this event's),
        "replace" (another event of the same invoice), or None (anything else: never touched)."""
        if root is None:
            return None
        if root.event_id == f.event.id:
            return "skip"
        return "replace" if invoice_xml.same_invoice(root, f.event) else None

    def _held(self, root: invoice_xml.Root | None) -> str:
        if root is None:
            return "a file streamd did not write"
        return f"the file of event {root.event_id}, another invoice"

    def _skipped(self, f: _File) -> None:
        self.files_skipped += 1
        log.info("sink %s: %s already holds %s for event %s; not written again",
                 self.name, self.where, f.name, f.event.id)

    async def _put(self, sftp: asyncssh.SFTPClient, f: _File) -> str | None:
        """Write `f` unless its name is taken by another invoice's file: then the reason."""
        path = self._path(f.name)
        replace = False
        if f.name in self._present:
            there, root = await self._existing(sftp, path)
            if there:  # else taken away since: write it again
                verdict = self._verdict(f, root)
                if verdict is None:
                    return self._conflict(f, self._held(root))
                if verdict == "skip":
                    self._skipped(f)
                    return None
                replace = True
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
        if replace:
            await self._replace(sftp, tmp, path)
        else:
            try:
                # SFTP's own rename refuses an existing name: nothing that appeared since the
                # listing (another uploader's file, the ERP's) is replaced unseen.
                await self._op(sftp.rename(tmp, path))
            except asyncssh.SFTPError:
                there, root = await self._existing(sftp, path)
                if not there:
                    raise  # the rename failed for another reason
                self._present.add(f.name)
                verdict = self._verdict(f, root)
                if verdict == "replace":
                    await self._replace(sftp, tmp, path)
                else:
                    await self._remove_quietly(sftp, tmp)
                    if verdict == "skip":
                        self._skipped(f)
                        return None
                    return self._conflict(f, self._held(root))
        self._present.add(f.name)
        self.files_written += 1
        return None

    async def _replace(self, sftp: asyncssh.SFTPClient, tmp: str, path: str) -> None:
        if self._posix_rename_ok:
            try:
                await self._op(sftp.posix_rename(tmp, path))
                return
            except asyncssh.SFTPOpUnsupported:
                self._posix_rename_ok = False
                log.warning("sink %s: %s does not support posix-rename@openssh.com; replacing a "
                            "file is remove + rename, not atomic", self.name, self.where)
        # A plain SFTP rename refuses an existing target.
        try:
            await self._op(sftp.remove(path))
        except asyncssh.SFTPNoSuchFile:
            pass
        await self._op(sftp.rename(tmp, path))

    async def _existing(self, sftp: asyncssh.SFTPClient,
                        path: str) -> tuple[bool, invoice_xml.Root | None]:
        """Whether `path` is there, and what its root says (None: not a file streamd wrote)."""
        try:
            handle = await self._op(sftp.open(path, "rb"))
        except asyncssh.SFTPNoSuchFile:
            return False, None
        try:
            head = await self._op(handle.read(_HEAD))
        finally:
            await self._close_quietly(handle)
        return True, invoice_xml.root_of(head if isinstance(head, bytes) else head.encode())

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
