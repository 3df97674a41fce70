"""The `sftp` sink's settings (`SftpSinkConfig`), the checks `streamd check` runs on them,
and the file names its `filename` template gives (docs/sinks/sftp.md): apart from the
sink (`sftp`), which connects and writes."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import asyncssh

from ..config import Match, SinkConfig
from ..model import Invoice
from ..secrets import Secret
from ..store import FeedEvent
from ..units import Duration
from .documents import Document
from .filenames import Template

FIELDS = ("tenant", "number", "documentNumber", "key", "id", "seq", "source", "op", "revision", "issued")
#: One of these tells one invoice's file from another's; a template without any would
#: give every invoice of a tenant (or of a day) one name.
DISTINCT = ("number", "documentNumber", "key", "id", "seq")
#: One of these tells an invoice's documents apart ({op} only with {id} or {seq}: one
#: event may make an issue and a payment).
PER_DOCUMENT = ("revision",)
FILENAME = "{tenant}-{number}_r{revision}_{op}.xml"


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
    filename: str = FILENAME
    match: Match = Match(provider=["horisen"], entity=["invoice"])
    # Write a `payment` document when what is paid of a booked invoice changes. Off: an ERP
    # that takes payments from its bank statement would book each one twice.
    payments: bool = False
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
    used = {f.name for f in parsed.fields}
    if not used & set(DISTINCT):
        return ("needs one of " + ", ".join("{" + f + "}" for f in DISTINCT)
                + ", or two invoices could get one name")
    if not used & set(PER_DOCUMENT) and not ("op" in used and used & {"id", "seq"}):
        return ("needs {revision} (or {op} with {id} or {seq}), or an invoice's documents (its "
                "corrections, cancellation, payments) could get one name")
    try:
        parsed.render(_SAMPLE)
    except (ValueError, TypeError) as exc:
        return f"cannot be rendered ({exc})"
    return None


_SAMPLE: dict[str, Any] = {
    "tenant": "acme", "number": "INV-1", "documentNumber": "INV-1", "key": "k1", "id": "0" * 32,
    "seq": 1, "source": "horisen", "op": "issue", "revision": 1, "issued": "2026-01-01",
}


def file_name(template: str | Template, event: FeedEvent, invoice: Invoice, doc: Document) -> str:
    # An invoice without a number is named by its key: an empty {number} would give every
    # such invoice of a tenant one name.
    number = invoice.number or event.key
    parsed = template if isinstance(template, Template) else Template(template, FIELDS)
    return parsed.render({
        "tenant": event.tenant, "number": number, "documentNumber": number, "key": event.key,
        "id": event.id, "seq": event.seq, "source": event.source, "op": doc.op,
        "revision": doc.revision, "issued": invoice.issued.isoformat() if invoice.issued else ""})


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
