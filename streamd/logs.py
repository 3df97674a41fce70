"""Logging to stderr: plain text, JSON lines, or journald-native priorities under systemd.

No secret is ever formatted into a message: config secrets print as their
reference (`env:NAME`), and HTTP client libraries that log URLs are kept at WARNING.
Both formatters still pass every message through `secrets.redact` (URLs lose their
password and query values, PEM blocks go): an exception from an HTTP library carries
the URL it failed on, query token and all.

A text record is one line per record, whatever it holds: the message is escaped
(`escape.escape`), so a provider id holding `\\n<0>… ERROR …` cannot forge a line (nor,
under journald, its priority), and an ANSI escape cannot reach a terminal. A
traceback keeps its line breaks, each line escaped and indented, and under journald
each carries the record's own priority, so no line after the first starts the way a
record does. JSON records are escaped by being JSON.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import msgspec

from .escape import escape
from .secrets import redact

_SYSLOG = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
           logging.CRITICAL: 2}
INDENT = "    "  # what a traceback's lines start with, after the journald priority


class _Text(logging.Formatter):
    def __init__(self, journald: bool) -> None:
        super().__init__()
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        msg = escape(redact(record.getMessage()))
        prio = f"<{_SYSLOG.get(record.levelno, 6)}>" if self.journald else ""
        if record.exc_info:
            text = redact(self.formatException(record.exc_info))
            # split("\n"), not splitlines(): the other separators (\r, \u2028 …) are escaped.
            msg += "".join(f"\n{prio}{INDENT}{escape(line)}" for line in text.split("\n"))
        if self.journald:  # journald adds its own timestamp; <N> sets the priority
            return f"{prio}{record.name}: {msg}"
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{ts}.{int(record.msecs):03d}Z {record.levelname:<7} {record.name}: {msg}"


class _Json(logging.Formatter):
    _enc = msgspec.json.Encoder()

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": record.created, "level": record.levelname.lower(), "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        return self._enc.encode(out).decode()


def setup(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    journald = fmt == "text" and bool(os.environ.get("JOURNAL_STREAM"))
    handler.setFormatter(_Json() if fmt == "json" else _Text(journald))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("uvicorn", "uvicorn.access", "httpx", "httpcore",
                  "websockets", "asyncssh", "aiosqlite"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # uvicorn warns once per malformed request ("Invalid HTTP request received."): anyone who
    # can reach the listener could fill the journal. streamd counts those in a metric instead.
    logging.getLogger("uvicorn.error").setLevel(max(logging.ERROR, root.level))
