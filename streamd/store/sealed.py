"""Credentials at rest: the `secret.` rows of `source_state`, sealed with AES-GCM.

A provider keeps a credential it must remember across restarts (Asperion's rotating
refresh token) as progress under a key starting with `secret.`. Every such row passes
through a `Sealer` both ways: the writer (and `write_state`, for `streamd auth`) seals
it, `FeedReader.progress` opens it. So a provider only ever sees the value, and with
`[store] secrets_key` set no code path writes one in clear.

A sealed value is

    b"sealed.v1:" | key id (4 bytes) | nonce (12 bytes) | AES-256-GCM ciphertext and tag

The prefix tells sealed from plaintext rows (plaintext is JSON, which never starts
with "s") and names the format, so it can change later. The associated data is the
header and the row's (source, key): a sealed token copied into another row does not
open. The key id is a hash of the key (it reveals nothing of it): it tells "sealed
with another key" from "altered", and picks `secrets_key_previous` during a rotation.

The key is 32 random bytes in base64 (`openssl rand -base64 32`). Nonces are random:
a key is good for 2^32 seals, and a token is sealed when it rotates (hourly or so).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import aiosqlite
import msgspec

from ..errors import ConfigError, SecretUnreadable

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from ..config import StoreConfig
    from ..secrets import Secret

log = logging.getLogger("streamd.store")

#: source_state keys with this prefix hold credentials: sealed when a key is configured,
#: and never shown by `streamd status`.
SECRET_PREFIX = "secret."
KEY_BYTES = 32
_MAGIC = b"sealed."
_V1 = b"sealed.v1:"
_ID_BYTES = 4
_NONCE_BYTES = 12
_TAG_BYTES = 16
_json = msgspec.json.Encoder(decimal_format="string")


def parse_key(text: str) -> bytes:
    """The key a `secrets_key` reference holds: 32 bytes in base64. The error never
    quotes the text (it is the secret)."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64: expected 32 random bytes in base64, made with "
                         "`openssl rand -base64 32`") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"decodes to {len(key)} bytes, not {KEY_BYTES}: make a key with "
                         "`openssl rand -base64 32`")
    return key


def key_id(key: bytes) -> bytes:
    return hashlib.sha256(b"streamd secrets_key id\0" + key).digest()[:_ID_BYTES]


def is_sealed(value: bytes) -> bool:
    return value.startswith(_MAGIC)


def _row(source: str, key: str) -> bytes:
    return source.encode() + b"\0" + key.encode()


class _Key:
    __slots__ = ("aead", "id", "setting")

    def __init__(self, key: bytes, setting: str) -> None:
        # Imported here, not with the module: `cryptography` is 7 MB of the daemon's
        # resident memory (docs/benchmarks.md, "Peak RSS under the full-speed run"), and
        # only a store with `secrets_key` set needs it.
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self.aead: AESGCM = AESGCM(key)
        self.id = key_id(key)
        self.setting = setting  # the config key it came from, for messages

    def describe(self) -> str:
        return f"{self.setting} (key {self.id.hex()})"


class Sealer:
    """Encodes and decodes `source_state` values; seals and opens the `secret.` ones."""

    def __init__(self, key: bytes | None = None, previous: bytes | None = None) -> None:
        self._key = _Key(key, "store.secrets_key") if key is not None else None
        self._previous = (_Key(previous, "store.secrets_key_previous")
                          if previous is not None and key is not None else None)

    @classmethod
    def from_config(cls, cfg: StoreConfig) -> Sealer:
        return cls(_reveal(cfg.secrets_key), _reveal(cfg.secrets_key_previous))

    @property
    def key_id(self) -> str | None:
        return self._key.id.hex() if self._key else None

    # ---------------------------------------------------------------- values

    def encode(self, source: str, key: str, value: Any) -> bytes:
        """A value as the `value` column holds it: JSON, sealed for a `secret.` key when
        there is a key."""
        data = _json.encode(value)
        if self._key is not None and key.startswith(SECRET_PREFIX):
            return self._seal(self._key, source, key, data)
        return data

    def decode(self, source: str, key: str, value: bytes) -> Any:
        """A `value` column's content as the source stored it; raises SecretUnreadable."""
        if key.startswith(SECRET_PREFIX) and is_sealed(value):
            value = self.open(source, key, value)
        return msgspec.json.decode(value)

    def _seal(self, k: _Key, source: str, key: str, data: bytes) -> bytes:
        header = _V1 + k.id
        nonce = os.urandom(_NONCE_BYTES)
        return header + nonce + k.aead.encrypt(nonce, data, header + _row(source, key))

    def open(self, source: str, key: str, value: bytes) -> bytes:
        what = f"the credential stored under {key!r}"
        if not value.startswith(_V1):
            form = value.partition(b":")[0][:24].decode("ascii", "replace")
            raise SecretUnreadable(f"{what} is sealed in a format this streamd does not know "
                                   f"({form!r}): upgrade streamd")
        header_len = len(_V1) + _ID_BYTES
        if len(value) < header_len + _NONCE_BYTES + _TAG_BYTES:
            raise SecretUnreadable(f"{what} is damaged (too short to be sealed)")
        kid = value[len(_V1):header_len]
        if self._key is None:
            raise SecretUnreadable(f"{what} is encrypted (key {kid.hex()}), but store.secrets_key "
                                   "is not set: set it to the key it was stored with")
        k = next((k for k in (self._key, self._previous) if k is not None and k.id == kid), None)
        if k is None:
            keys = " nor ".join(k.describe() for k in (self._key, self._previous) if k is not None)
            raise SecretUnreadable(f"{what} was encrypted with key {kid.hex()}, not with {keys}: "
                                   "set store.secrets_key to the key it was stored with")
        from cryptography.exceptions import InvalidTag  # loaded with AESGCM by _Key

        nonce = value[header_len:header_len + _NONCE_BYTES]
        try:
            return k.aead.decrypt(nonce, value[header_len + _NONCE_BYTES:],
                                  value[:header_len] + _row(source, key))
        except InvalidTag:
            raise SecretUnreadable(f"{what} does not decrypt with {k.describe()}: it was altered, "
                                   "or copied from another source's row") from None

    def reseal(self, source: str, key: str, value: bytes) -> bytes | None:
        """The value as it should be at rest under the configured key, or None if it
        already is (or there is no key)."""
        if self._key is None or not key.startswith(SECRET_PREFIX):
            return None
        if not is_sealed(value):
            return self._seal(self._key, source, key, value)
        if value.startswith(_V1 + self._key.id):
            return None
        return self._seal(self._key, source, key, self.open(source, key, value))


def _reveal(secret: Secret | None) -> bytes | None:
    if secret is None:
        return None
    try:
        return parse_key(secret.reveal())
    except ValueError as exc:
        raise ConfigError(f"store: {secret.reference}: {exc}") from None


async def seal_at_rest(db: aiosqlite.Connection, sealer: Sealer, path: str) -> None:
    """At the writer's start: seal the credentials stored in clear and re-seal those
    under `secrets_key_previous`, in one transaction; without a key, warn about the ones
    in clear. Rows that cannot be opened are left alone: their source says why."""
    rows = await db.execute_fetchall(
        "SELECT source, key, value FROM source_state WHERE substr(key, 1, ?) = ?",
        (len(SECRET_PREFIX), SECRET_PREFIX))
    if not rows:
        return
    if sealer.key_id is None:
        clear = sorted({s for s, _, v in rows if not is_sealed(bytes(v))})
        if clear:
            log.warning("store: credentials of %s are stored in clear in %s: set [store] "
                        "secrets_key to encrypt them (docs/operations.md, \"Backups\")",
                        _sources(clear), path)
        return
    updates: list[tuple[bytes, str, str]] = []
    sealed = resealed = 0
    for source, key, value in rows:
        blob = bytes(value)
        try:
            new = sealer.reseal(source, key, blob)
        except SecretUnreadable as exc:
            log.warning("store: source %s: %s", source, exc)
            continue
        if new is not None:
            updates.append((new, source, key))
            if is_sealed(blob):
                resealed += 1
            else:
                sealed += 1
    if not updates:
        return
    # secure_delete zeroes the old cells as they are rewritten, and the checkpoint below
    # empties the WAL, so the file no longer holds the tokens in clear. (Some builds of
    # SQLite have it on by default; the writer's setting is put back as it was.)
    async with db.execute("PRAGMA secure_delete") as cur:
        row = await cur.fetchone()
    was = int(row[0]) if row else 0
    await db.execute("PRAGMA secure_delete=ON")
    try:
        await db.execute("BEGIN IMMEDIATE")
        try:
            await db.executemany("UPDATE source_state SET value = ? WHERE source = ? AND key = ?",
                                 updates)
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise
    finally:
        await db.execute(f"PRAGMA secure_delete={was}")
    async with db.execute("PRAGMA wal_checkpoint(TRUNCATE)") as cur:
        checkpoint = await cur.fetchone()
    if sealed:
        log.info("store: encrypted %d credential(s) that were stored in clear, with store.secrets_key"
                 " (key %s)", sealed, sealer.key_id)
    if resealed:
        log.info("store: re-encrypted %d credential(s) from store.secrets_key_previous to "
                 "store.secrets_key (key %s); secrets_key_previous can go", resealed, sealer.key_id)
    if checkpoint is not None and checkpoint[0]:
        log.warning("store: %s: the WAL could not be emptied now (a reader holds it); it may "
                    "hold credentials in clear until SQLite writes over them", path)


def _sources(names: list[str]) -> str:
    return ("source " if len(names) == 1 else "sources ") + ", ".join(names)


def encode_state(sealer: Sealer, source: str, progress: Mapping[str, Any],
                 now_ms: int) -> list[tuple[str, str, bytes, int]]:
    """source_state rows for one source's progress (credentials sealed)."""
    return [(source, k, sealer.encode(source, k, v), now_ms) for k, v in progress.items()]
