"""The feed database: one SQLite file in WAL mode, its schema and its migrations.

Schema version lives in `PRAGMA user_version`. `MIGRATIONS[n]` takes a store from
version n to n+1; a store newer than this build knows is refused (StoreFatal),
never guessed at.

Why `event_ids` looks the way it does: the dedupe check is the main cost of an
append at scale. A UNIQUE index over random ids dirties about one B-tree page per
event, and every page is written twice (WAL, then checkpoint). So the 16-byte ids
live in a WITHOUT ROWID table (the key stored once, no rowid), keyed first by a
bucket taken from the event's version (its second, when the version is a provider
timestamp): recent events land in a small part of the index. With rare checkpoints
(`store.checkpoint_every`) this measured 5x a UNIQUE text index on a 1M-event feed;
see docs/benchmarks.md.

The file holds the feed and the credentials sources keep (see `sealed`): it is the
owner's alone. SQLite would create it 0644 less the umask, and gives `-wal` and
`-shm` the main file's mode, so the writer creates the file 0600 itself before SQLite
opens it, and tightens one it finds open to group or others (`private`).
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import stat
from collections.abc import Callable
from typing import Any, TypeVar, cast

import aiosqlite
import anyio

from ..config import StoreConfig
from ..errors import DiskFull, StoreBusy, StoreError, StoreFatal

log = logging.getLogger("streamd.store")

T = TypeVar("T")

MIGRATIONS: list[list[str]] = [
    # 0 -> 1: the first schema
    [
        """CREATE TABLE events (
            seq      INTEGER PRIMARY KEY AUTOINCREMENT,
            id       BLOB    NOT NULL,   -- 16 bytes, see model.envelope.event_id
            source   TEXT    NOT NULL,   -- the configured source name
            provider TEXT    NOT NULL,
            tenant   TEXT    NOT NULL,
            entity   TEXT    NOT NULL,
            op       TEXT    NOT NULL,   -- created | updated | deleted
            key      TEXT    NOT NULL,
            version  TEXT    NOT NULL,   -- what the id was derived from
            time     TEXT    NOT NULL,   -- RFC 3339, from the provider
            received INTEGER NOT NULL,   -- unix ms when committed; never decreases along seq
            data     BLOB    NOT NULL,   -- the unified entity, JSON
            raw      BLOB                -- the wire payload (store.keep_raw)
        )""",
        """CREATE TABLE event_ids (
            bucket TEXT NOT NULL,         -- model.envelope.dedupe_bucket(version)
            id     BLOB NOT NULL,
            PRIMARY KEY (bucket, id)
        ) WITHOUT ROWID""",
        """CREATE TABLE source_state (
            source  TEXT    NOT NULL,
            key     TEXT    NOT NULL,
            value   BLOB    NOT NULL,
            updated INTEGER NOT NULL,
            PRIMARY KEY (source, key)
        ) WITHOUT ROWID""",
        """CREATE TABLE entity_state (
            source  TEXT    NOT NULL,
            tenant  TEXT    NOT NULL,
            entity  TEXT    NOT NULL,
            key     TEXT    NOT NULL,
            version TEXT    NOT NULL,
            data    BLOB,
            updated INTEGER NOT NULL,
            PRIMARY KEY (source, tenant, entity, key)
        ) WITHOUT ROWID""",
        """CREATE TABLE sink_offsets (
            sink    TEXT    PRIMARY KEY,
            seq     INTEGER NOT NULL,
            updated INTEGER NOT NULL
        )""",
        """CREATE TABLE dead_letters (
            id        INTEGER PRIMARY KEY AUTOINCREMENT,
            created   INTEGER NOT NULL,          -- unix ms
            origin    TEXT    NOT NULL,          -- source | sink
            name      TEXT    NOT NULL,          -- the source or sink name
            provider  TEXT,
            reason    TEXT    NOT NULL,
            context   BLOB    NOT NULL,          -- JSON object: what re-processing needs
            raw       BLOB,                      -- source: the wire bytes; sink: the feed line
            event_seq INTEGER,                   -- sink: the event it could not deliver
            attempts  INTEGER NOT NULL DEFAULT 0,
            status    TEXT    NOT NULL DEFAULT 'new'  -- new | retry
        )""",
        "CREATE INDEX dead_letters_status ON dead_letters (status, origin, name)",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ],
    # 1 -> 2: where a record is, without its tenant. An Asteria deletion names only the
    # record (`{"_id": …}`): the source finds its tenant in entity_state by this index, and
    # from now on keeps a row per record there (providers/asteria/tenants.py). The rows
    # are filled from the Asteria events already in the feed, the last tenant of each
    # record winning, so records seen before the upgrade are placed too.
    [
        "CREATE INDEX entity_state_key ON entity_state (source, entity, key)",
        """INSERT INTO entity_state (source, tenant, entity, key, version, data, updated)
           SELECT source, tenant, entity, key, version, NULL, received FROM events
           WHERE provider = 'asteria' AND tenant != '' ORDER BY seq
           ON CONFLICT (source, tenant, entity, key) DO UPDATE SET
             version = excluded.version, updated = excluded.updated""",
    ],
    # 2 -> 3: what a sink remembers of what it delivered (the sftp sink: each invoice's
    # documents), committed with its offset
    [
        """CREATE TABLE sink_state (
            sink  TEXT    NOT NULL,
            key   TEXT    NOT NULL,   -- what the sink keeps state about (an invoice)
            seq   INTEGER NOT NULL,   -- the last event it took for that key
            value BLOB    NOT NULL,   -- JSON array of entries, each [seq of its event, ...]
            PRIMARY KEY (sink, key)
        ) WITHOUT ROWID""",
    ],
    # 3 -> 4: where each record a source has seen is (Asteria's: a deletion names only the
    # record), one narrow row per record under the key a deletion looks it up by. In
    # entity_state the same fact cost a row in the table and one in its second index
    # (entity_state_key), with a version and a time nobody read: three times the SQLite
    # time per new record (docs/benchmarks.md, issue 18). Rows written there before stay
    # where they are and are still found (`FeedReader.entity_tenants`), so nothing moves.
    [
        """CREATE TABLE record_tenants (
            source TEXT NOT NULL,
            entity TEXT NOT NULL,
            key    TEXT NOT NULL,
            tenant TEXT NOT NULL,
            PRIMARY KEY (source, entity, key)
        ) WITHOUT ROWID""",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)
PAGE_SIZE = 4096
READER_CACHE_KIB = 4096

_TRANSIENT = {"SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_BUSY_SNAPSHOT"}
# Below this much free space, an I/O error on the store is taken for the full disk.
_NEARLY_FULL = 1 << 20


def classify(exc: BaseException, path: str) -> StoreError:
    """Map a sqlite3 error to StoreBusy (retry, intake pauses; DiskFull when there is no
    space left) or StoreFatal (stop, exit 1)."""
    if isinstance(exc, StoreError):
        return exc
    name = getattr(exc, "sqlite_errorname", "") or ""
    # SQLite says SQLITE_FULL when a write() fails with ENOSPC, but the same full disk
    # surfaces as an I/O error elsewhere: growing the -shm file (SQLITE_IOERR_SHMSIZE, on
    # opening the store and whenever the WAL passes another ~16 MiB), an fsync, a
    # truncate. The errno is not exposed, so an I/O error while the store's filesystem has
    # no space left is taken for the full disk; retrying it is safe (SQLite rolled back).
    if name == "SQLITE_FULL" or (name.startswith("SQLITE_IOERR") and _no_space(path)):
        return DiskFull(f"{path}: cannot commit: the disk is full ({name})")
    if name in _TRANSIENT or name.startswith("SQLITE_BUSY"):
        return StoreBusy(f"{path}: cannot commit: the database is locked ({name})")
    if isinstance(exc, OSError):
        return StoreFatal(f"{path}: {exc.strerror or exc}")
    detail = f"{exc} ({name})" if name else str(exc)
    return StoreFatal(f"{path}: store unusable: {detail}")


def _no_space(path: str) -> bool:
    """Whether the filesystem holding `path` has (almost) no blocks or inodes left."""
    try:
        st = os.statvfs(os.path.dirname(os.path.abspath(path)))
    except OSError:
        return False
    # f_files is 0 where inodes are not counted (btrfs): no inode shortage to see there.
    return st.f_bavail * st.f_frsize < _NEARLY_FULL or (st.f_files > 0 and st.f_favail == 0)


async def connect(cfg: StoreConfig, *, create: bool = True, reader: bool = False) -> aiosqlite.Connection:
    """Open the feed with streamd's pragmas; migrate it when `create` (the daemon's writer)."""
    path = cfg.path
    if not create and not await anyio.Path(path).exists():
        raise StoreFatal(f"{path}: no feed database here (has streamd run with this config?)")
    if create:
        await anyio.to_thread.run_sync(private, path)
    try:
        db = await aiosqlite.connect(path, isolation_level=None, timeout=10.0)
    except sqlite3.Error as exc:
        raise classify(exc, path) from None
    try:
        await _configure(db, cfg, reader=reader)
        if create:
            await migrate(db, path)
        else:
            await check_version(db, path)
    except BaseException as exc:
        await db.close()
        if isinstance(exc, sqlite3.Error):
            raise classify(exc, path) from None
        raise
    return db


PRIVATE = 0o600
_SIDE_FILES = ("", "-wal", "-shm")


async def in_thread(db: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> T:
    """`fn(connection, *args)` on `db`'s own thread, in one trip: for work of several
    statements that need nothing from the event loop in between (the writer's transaction).

    aiosqlite has no public call for this; `_execute` (queue a function for its thread)
    and `_conn` have been its internals, unchanged, from 0.17 to 0.22, and every test of
    the writer goes through them."""
    def call() -> T:
        conn: sqlite3.Connection = db._conn  # noqa: SLF001
        return fn(conn, *args)
    execute = cast(Callable[[Callable[[], T]], Any], db._execute)  # noqa: SLF001
    return cast(T, await execute(call))


def private(path: str) -> None:
    """Make the feed the owner's alone: its directory, when streamd creates it, 0700; the
    file created 0600 whatever the umask (SQLite then gives -wal and -shm that mode); an
    existing file, -wal or -shm with any permission for group or others made 0600, with a
    warning."""
    parent = os.path.dirname(os.path.abspath(path))
    try:
        if not os.path.isdir(parent):
            os.makedirs(os.path.dirname(parent), exist_ok=True)
            try:
                os.mkdir(parent, 0o700)
            except FileExistsError:  # made meanwhile, or a file
                if not os.path.isdir(parent):
                    raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)) from None
            else:
                os.chmod(parent, 0o700)  # the umask may have taken bits off
    except OSError as exc:
        raise StoreFatal(f"{path}: cannot create its directory: {exc.strerror}") from None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE)
    except FileExistsError:
        pass
    except OSError as exc:
        raise StoreFatal(f"{path}: cannot create the feed database: {exc.strerror}") from None
    else:
        try:
            os.fchmod(fd, PRIVATE)  # the umask may have taken bits off
        finally:
            os.close(fd)
    # Also after creating it: a -wal left from a feed deleted without it would be reused.
    for side in _SIDE_FILES:
        file = path + side
        try:
            st = os.stat(file)
        except OSError:
            continue  # not there (or not ours to look at): SQLite says what is wrong
        mode = stat.S_IMODE(st.st_mode)
        if not stat.S_ISREG(st.st_mode) or not mode & 0o077:
            continue
        try:
            os.chmod(file, PRIVATE)
        except OSError as exc:
            log.warning("store: %s is accessible to others than its owner (mode %04o), and cannot "
                        "be made 0600 (%s): it holds the feed and the sources' credentials",
                        file, mode, exc.strerror)
        else:
            log.warning("store: %s was accessible to others than its owner (mode %04o); made it "
                        "0600: it holds the feed and the sources' credentials", file, mode)


async def _configure(db: aiosqlite.Connection, cfg: StoreConfig, *, reader: bool) -> None:
    await db.execute(f"PRAGMA page_size={PAGE_SIZE}")
    await db.execute("PRAGMA busy_timeout=10000")
    if reader:
        # Readers (sinks, tail) read each new page once: a small cache, and the OS page cache
        # serves the rest. `store.cache` is for the writer, whose dedupe index is hot.
        await db.execute(f"PRAGMA cache_size=-{READER_CACHE_KIB}")
        await db.execute("PRAGMA query_only=1")
        return
    await db.execute(f"PRAGMA cache_size=-{max(cfg.cache.bytes // 1024, 2048)}")
    async with db.execute("PRAGMA journal_mode=WAL") as cur:
        row = await cur.fetchone()
    if row is None or str(row[0]).lower() != "wal":
        raise StoreFatal(f"{cfg.path}: cannot switch the database to WAL mode (got {row})")
    await db.execute(f"PRAGMA synchronous={cfg.synchronous.upper()}")
    pages = max(cfg.checkpoint_every.bytes // PAGE_SIZE, 100)
    await db.execute(f"PRAGMA wal_autocheckpoint={pages}")
    # After a checkpoint, shrink the WAL file back to this size.
    await db.execute(f"PRAGMA journal_size_limit={cfg.checkpoint_every.bytes}")


async def _user_version(db: aiosqlite.Connection) -> int:
    async with db.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def check_version(db: aiosqlite.Connection, path: str) -> int:
    version = await _user_version(db)
    if version > SCHEMA_VERSION:
        raise StoreFatal(
            f"{path}: written by a newer streamd (schema {version}; this streamd knows up to "
            f"{SCHEMA_VERSION}). Upgrade streamd, or restore a backup made with this version."
        )
    if version < SCHEMA_VERSION:
        raise StoreFatal(
            f"{path}: schema {version} is older than this streamd ({SCHEMA_VERSION}); "
            "start the daemon once to migrate it"
        )
    return version


async def migrate(db: aiosqlite.Connection, path: str) -> int:
    version = await _user_version(db)
    if version > SCHEMA_VERSION:
        await check_version(db, path)
    if version == 0:
        # A non-empty file with user_version 0 is not ours: refuse rather than write into it.
        async with db.execute("SELECT count(*) FROM sqlite_master") as cur:
            row = await cur.fetchone()
        if row and row[0]:
            raise StoreFatal(f"{path}: is an SQLite database, but not a streamd feed")
    while version < SCHEMA_VERSION:
        await db.execute("BEGIN IMMEDIATE")
        try:
            for stmt in MIGRATIONS[version]:
                await db.execute(stmt)
            version += 1
            await db.execute(f"PRAGMA user_version={version}")
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise
    return version
