"""The `sftp` sink's settings (`SftpSinkConfig`) and the checks `streamd check` runs on
them (docs/sinks/sftp.md): apart from the sink (`sftp`), which connects and writes, and
from the formats it writes (`FORMATS`), which make the files.

`format` chooses what the files hold, and with it the defaults of `filename` and `match`:
`"invoice-xml"` takes HORISEN's invoices, `"jsonl"` every event.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

import asyncssh
import msgspec

from ..config import Match, SinkConfig
from ..secrets import Secret
from ..units import Duration
from .file_format import FileFormat
from .invoice_files import InvoiceDocuments
from .jsonl_files import JsonLines

Format = Literal["invoice-xml", "jsonl"]
FORMATS: dict[str, type[FileFormat]] = {"invoice-xml": InvoiceDocuments, "jsonl": JsonLines}
#: What an `invoice-xml` sink takes unless its table says otherwise; a `jsonl` one: everything.
INVOICES = Match(provider=["horisen"], entity=["invoice"])


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
    # What the files hold (FORMATS); the defaults of `filename` and `match` follow it.
    format: Format = "invoice-xml"
    filename: str = ""  # "": the format's (`{tenant}-{number}_r{revision}_{op}.xml` for invoice-xml)
    match: Match = INVOICES
    # Write a `payment` document when what is paid of a booked invoice changes. Off: an ERP
    # that takes payments from its bank statement would book each one twice.
    payments: bool = False
    fsync: bool = True
    # Connecting, and each SFTP request after that.
    timeout: Duration = Duration(30.0)
    concurrency: int = 8
    batch_max: int = 100

    def __post_init__(self) -> None:
        # The defaults that depend on `format`, filled in once, so that `streamd check`
        # prints what the sink will do. `match` is the invoices' default by identity: a
        # table that names those invoices itself keeps them, whatever the format.
        fmt = FORMATS[self.format]
        if not self.filename:
            msgspec.structs.force_setattr(self, "filename", fmt.FILENAME)
        if self.format != "invoice-xml" and self.match is INVOICES:
            msgspec.structs.force_setattr(self, "match", Match())


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
    if cfg.payments and cfg.format != "invoice-xml":
        problems.append(f"payments: payment documents are invoice-xml's; format {cfg.format!r} "
                        "writes every event as it is")
    problem = FORMATS[cfg.format].template_problem(cfg.filename)
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
