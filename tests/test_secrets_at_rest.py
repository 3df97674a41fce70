"""The feed database at rest: the owner's alone (0600 whatever the umask, an existing readable
one tightened). Real `streamd run` processes, real SQLite files."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .conftest import Streamd, wait_for

SYNTHETIC = '[sources.gen]\nprovider = "synthetic"\nrate = 200\n'


# ---------------------------------------------------------------- helpers

@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def events(d: Streamd, source: str) -> int:
    return int(d.query("SELECT count(*) FROM events WHERE source = ?", (source,))[0][0])


# ---------------------------------------------------------------- file modes

def test_the_feed_is_created_0600_under_umask_022(streamd_proc: Callable[..., Streamd]) -> None:
    d = streamd_proc('[store]\npath = "state/feed.db"\n[http]\nlisten = "127.0.0.1:0"\n' + SYNTHETIC)
    db = d.dir / "state" / "feed.db"
    with umask(0o022):
        d.start()
    wait_for(lambda: Path(f"{db}-wal").exists() and Path(f"{db}-shm").exists(), 10,
             "the -wal and -shm files")
    assert mode(d.dir / "state") == 0o700
    assert {p.name: oct(mode(p)) for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm"))} == {
        "feed.db": "0o600", "feed.db-wal": "0o600", "feed.db-shm": "0o600"}
    assert d.terminate() == 0


def test_a_readable_feed_is_made_0600_at_start_with_a_warning(streamd_proc: Callable[..., Streamd]) -> None:
    d = streamd_proc('[store]\npath = "feed.db"\n[http]\nlisten = "127.0.0.1:0"\n' + SYNTHETIC)
    d.start()
    wait_for(lambda: events(d, "gen") > 0, 10, "events")
    d.kill()  # leaves the -wal and -shm behind
    files = [d.db, Path(f"{d.db}-wal"), Path(f"{d.db}-shm")]
    for f in files:
        f.chmod(0o644)
    d.start()
    assert [oct(mode(f)) for f in files] == ["0o600"] * 3
    for f in files:
        assert f"store: {f} was readable by others than its owner (mode 0644); made it 0600" in d.log()
    assert d.terminate() == 0
