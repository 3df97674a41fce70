"""Every error streamd raises on purpose, in one place.

Foreign exceptions (sqlite3, httpx, OSError, msgspec, asyncpg, nats) are mapped onto
this hierarchy at the boundary where they happen, so the code that decides "retry,
dead-letter, or stop" only ever looks at these types::

    StreamdError
    ├── ConfigError            bad config or missing secret: refused before start, exit 78
    ├── SecretError            a secret reference that cannot be read (also a ValueError)
    ├── StartupError           something outside the config and the store stops the start: exit 1
    │   └── BindError          a listen address cannot be bound (taken, not local)
    ├── StoreError             the SQLite feed cannot be used
    │   ├── StoreFatal         corrupt, unreadable, read-only, newer schema: exit 1
    │   ├── StoreBusy          transient (disk full, locked): retried, intake pauses
    │   │   └── DiskFull       no space left for the store: /readyz fails at once
    │   └── WriterClosed       the writer is stopping or stopped: nothing more is accepted
    ├── SecretUnreadable       a sealed credential in the store cannot be opened: its source stops
    ├── Rejected               a payload that normalization refuses (goes to dead letters)
    ├── NotAnAmount            a value the feed cannot carry as an amount (also a ValueError)
    ├── Unavailable            a source's peer is down or busy (timeout, 429, 5xx): retried
    │   └── TokenUnavailable   the identity server is down or busy: retried
    ├── PollFailed             this poll cannot complete now: retried, nothing deleted
    ├── ReportsMissing         HORISEN has no traffic reports for an invoice yet: held
    ├── AuthFailed             the provider refused our credentials: the source waits for new ones
    │   └── TokenLost          a rotation the last run began spent the stored token: `streamd auth`
    ├── AuthorizationFailed    `streamd auth` could not authorize a source: exit 1
    ├── DeliveryError          a sink could not deliver
    │   ├── Retryable          try the same batch again later (timeouts, 5xx, 429)
    │   └── Permanent          this batch will never succeed as is (4xx, bad data)
    ├── JetStreamRefused       the nats sink's stream answered a batch with an error
    ├── SinkSchemaError        the postgres sink's tables cannot be used as they are
    └── SinkStateUnreadable    what the sftp sink remembers of an invoice is not its own

A sink maps its own errors (`JetStreamRefused`, `SinkSchemaError`, `SinkStateUnreadable`)
onto `Retryable` or `Permanent` inside `deliver`: the dispatcher only ever sees those two
(anything else is logged with its traceback and retried).

Two kinds stay where they are raised, since no other module ever sees them: control
flow private to one module (`web._BodyTooLarge`, `model.check._Bad`), and the
simulated peers' own refusals (`connec.query.BadQuery`, `horisen.records.BadFilter`),
which their simulator answers with a 400.
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


class SecretError(StreamdError, ValueError):
    """A reference that cannot be resolved. Never carries the secret itself. A ValueError
    too: the config decoder reports it as a bad value of its key."""


class StartupError(StreamdError):
    """Something outside the config and the store stops the start (e.g. the port is taken)."""


class BindError(StartupError):
    """A listen address cannot be bound (taken, not local); the message names the key."""


class StoreError(StreamdError):
    """The feed database failed."""


class StoreFatal(StoreError):
    """The store is unusable (corrupt, read-only, written by a newer streamd)."""


class StoreBusy(StoreError):
    """The store is temporarily unable to commit (disk full, locked). Retried."""


class DiskFull(StoreBusy):
    """No space left on the store's filesystem. Retried like any StoreBusy, but unlike a
    lock held for a moment it waits for the operator: readiness fails at once."""


class WriterClosed(StoreError):
    """The writer is stopping (shutdown) or stopped; nothing more is accepted."""


class SecretUnreadable(StreamdError):
    """A sealed credential that cannot be opened here (no key, another key, altered, a
    newer format). Fatal for the one source that owns it, never for the daemon. The
    message names the row and the key ids, never a key or a value."""


class Rejected(StreamdError):
    """Normalization refused a payload; `reason` says why, for the dead-letter table."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class NotAnAmount(StreamdError, ValueError):
    """Why a decimal is no amount the feed may carry (not finite, out of range). The
    caller adds the field and makes it a `Rejected`."""


class Unavailable(StreamdError):
    """A source's peer cannot answer now (timeout, connection error, 408, 429, 5xx): retry
    after a backoff of at least `retry_after` seconds (the peer's own hint), if given."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class TokenUnavailable(Unavailable):
    """The identity server could not be reached or answered 5xx/429: retried."""


class PollFailed(StreamdError):
    """This poll cannot complete now: it is retried after a backoff, and what only a
    complete poll may do (delete, move a cursor) is not done."""


class ReportsMissing(StreamdError):
    """404 INVOICE_NOTFOUND on an invoice's traffic reports."""


class AuthFailed(StreamdError):
    """The provider refused our credentials, or a token it had just given: new ones are
    needed. Fatal for the source, never for the daemon."""


class TokenLost(AuthFailed):
    """The stored refresh token was spent by a rotation the last run began and never
    committed: only `streamd auth` can help."""


class AuthorizationFailed(StreamdError):
    """`streamd auth` could not authorize a source: the provider refused, the browser never
    came back, or the redirect address cannot be bound. Said to the person at the terminal."""


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


class JetStreamRefused(StreamdError):
    """JetStream answered a batch with an error: nothing of it was stored. The nats sink
    decides from `code` whether that is a duplicate, a retry or a refusal."""

    def __init__(self, code: int, description: str) -> None:
        super().__init__(f"{description} (err_code {code})")
        self.code = code
        self.description = description


class SinkSchemaError(StreamdError):
    """The postgres sink's schema cannot be used as it is; the message says why and what
    to do."""


class SinkStateUnreadable(StreamdError):
    """What the store holds as a sink's state for a key (the sftp sink's history of an
    invoice) is not what that sink wrote: the event it is needed for is refused."""
