"""Every error streamd raises on purpose, in one place.

Foreign exceptions (sqlite3, httpx, OSError, msgspec) are mapped onto this
hierarchy at the boundary where they happen, so the code that decides
"retry, dead-letter, or stop" only ever looks at these types::

    StreamdError
    ├── ConfigError            bad config or missing secret: refused before start, exit 78
    ├── StoreError             the SQLite feed cannot be used
    │   ├── StoreFatal         corrupt, unreadable, read-only, newer schema: exit 1
    │   └── StoreBusy          transient (disk full, locked): retried, intake pauses
    │       └── DiskFull       no space left for the store: /readyz fails at once
    ├── Rejected               a payload that normalization refuses (goes to dead letters)
    ├── Unavailable            a source's peer is down or busy (timeout, 429, 5xx): retried
    └── DeliveryError          a sink could not deliver
        ├── Retryable          try the same batch again later (timeouts, 5xx, 429)
        └── Permanent          this batch will never succeed as is (4xx, bad data)
"""

from __future__ import annotations

EX_CONFIG = 78  # sysexits.h: configuration error; systemd's RestartPreventExitStatus
EX_FAILURE = 1


class StreamdError(Exception):
    """Base of every error streamd raises deliberately."""


class ConfigError(StreamdError):
    """The configuration cannot be used. The message names the key, never a secret."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class StoreError(StreamdError):
    """The feed database failed."""


class StoreFatal(StoreError):
    """The store is unusable (corrupt, read-only, written by a newer streamd)."""


class StoreBusy(StoreError):
    """The store is temporarily unable to commit (disk full, locked). Retried."""


class DiskFull(StoreBusy):
    """No space left on the store's filesystem. Retried like any StoreBusy, but unlike a
    lock held for a moment it waits for the operator: readiness fails at once."""


class Rejected(StreamdError):
    """Normalization refused a payload; `reason` says why, for the dead-letter table."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class Unavailable(StreamdError):
    """A source's peer cannot answer now (timeout, connection error, 408, 429, 5xx): retry
    after a backoff of at least `retry_after` seconds (the peer's own hint), if given."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class DeliveryError(StreamdError):
    """A sink could not deliver a batch."""


class Retryable(DeliveryError):
    """Transient: deliver the same batch again after a backoff.

    `retry_after` (seconds) is the peer's own hint, e.g. from `Retry-After`.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class Permanent(DeliveryError):
    """This batch cannot be delivered as is. The dispatcher bisects it to find the
    offending events and dead-letters them after `max_tries`."""
