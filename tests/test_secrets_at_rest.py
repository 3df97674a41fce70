"""The feed database at rest: the owner's alone (0600 whatever the umask, an existing readable
one tightened), and the tokens sources keep in it encrypted with `[store] secrets_key`.

Real `streamd run` processes against the Asperion simulator (its OAuth2 refresh tokens
rotate on every use), real SQLite files read byte for byte."""

from __future__ import annotations

import base64
import json
import os
import re
import sqlite3
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import httpx
import pytest

from streamd.config import StoreConfig
from streamd.configfile import load
from streamd.errors import EX_CONFIG, SecretUnreadable
from streamd.providers.asperion import simulator as sim_mod
from streamd.providers.asperion.oauth import ROTATION_KEY, TOKEN_KEY, fingerprint
from streamd.providers.asperion.simulator import AsperionSimulator, Knobs
from streamd.providers.asperion.source import CREDENTIALS_CHECK
from streamd.store import FeedReader, connect, write_state
from streamd.store.sealed import Sealer, key_id, parse_key, seal_at_rest

from .conftest import Background, Streamd, streamd_cli, wait_for

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


def make_key(path: Path) -> Path:
    """What `openssl rand -base64 32 > key` leaves."""
    path.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    path.chmod(0o600)
    return path


def kid(path: Path) -> str:
    return key_id(parse_key(path.read_text())).hex()


def serve(bg: Background, tmp_path: Path, knobs: Knobs) -> AsperionSimulator:
    sim = sim_mod.simulator(tmp_path / "sim", knobs)
    bg.start(sim.serve)
    wait_for(lambda: getattr(sim, "url", ""), 10, "the simulator to listen")
    return sim


def config(sim: AsperionSimulator, key: Path | None = None, previous: Path | None = None,
           other: str = "") -> str:
    store = '[store]\npath = "feed.db"\n'
    if key is not None:
        store += f'secrets_key = "file:{key}"\n'
    if previous is not None:
        store += f'secrets_key_previous = "file:{previous}"\n'
    return (store + '[http]\nlisten = "127.0.0.1:0"\n'
            + sim.source_toml("ap", interval='"200ms"', backoff='{ min = "20ms", max = "300ms" }',
                              refresh_before='"1s"') + other)


def authorize(d: Streamd, sim: AsperionSimulator) -> None:
    """`streamd auth ap --refresh-token -`, a real subprocess with the daemon's config."""
    token = sim.issue_refresh_token()
    done = streamd_cli("auth", "ap", "-c", str(d.config), "--refresh-token", "-",
                       input=token.encode() + b"\n")
    assert done.returncode == 0, done.stderr
    assert not any(t in done.stdout + done.stderr for t in sim.identity.issued)


def events(d: Streamd, source: str = "ap") -> int:
    return int(d.query("SELECT count(*) FROM events WHERE source = ?", (source,))[0][0])


def stored_token(d: Streamd) -> bytes:
    (value,) = d.query("SELECT value FROM source_state WHERE source = 'ap' AND key = ?", (TOKEN_KEY,))[0]
    return bytes(value)


def at_rest(d: Streamd) -> bytes:
    """Every byte of the feed on disk: the database, its WAL and shared memory."""
    return b"".join(p.read_bytes() for p in (d.db, Path(f"{d.db}-wal"), Path(f"{d.db}-shm"))
                    if p.exists())


def assert_no_token_in(data: bytes | str, sim: AsperionSimulator) -> None:
    raw = data.encode() if isinstance(data, str) else data
    leaked = [t for t in sim.identity.issued if t.encode() in raw]
    assert not leaked, f"{len(leaked)} of {len(sim.identity.issued)} tokens found"


def readyz(d: Streamd) -> httpx.Response:
    return httpx.get(d.url + "/readyz", timeout=5)


def failed_for(d: Streamd) -> int:
    """How long /readyz says source ap has been failed (-1: it is not)."""
    m = re.search(r"source ap: failed for (\d+)s", readyz(d).text)
    return int(m.group(1)) if m else -1


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
        assert f"store: {f} was accessible to others than its owner (mode 0644); made it 0600" in d.log()
    assert d.terminate() == 0


# ---------------------------------------------------------------- tokens encrypted at rest

def test_tokens_are_encrypted_at_rest_and_decrypt_after_a_restart(
        streamd_proc: Callable[..., Streamd], background: Background, tmp_path: Path) -> None:
    sim = serve(background, tmp_path, Knobs(records=4, token_ttl=2.0))
    key = make_key(tmp_path / "secrets.key")
    d = streamd_proc(config(sim, key))
    with umask(0o022):
        authorize(d, sim)  # creates the feed: 0600 too
    assert mode(d.dir / "feed.db") == 0o600
    assert stored_token(d).startswith(b"sealed.v1:" + bytes.fromhex(kid(key)))
    d.start()
    # Several rotations, each written by the daemon's writer.
    wait_for(lambda: events(d) >= 24 and sim.refreshes >= 3, 30, "polls and token rotations")
    assert_no_token_in(at_rest(d), sim)
    assert d.terminate() == 0
    assert_no_token_in(at_rest(d), sim)

    # The sealed token opens again after a restart: a change made meanwhile arrives.
    sim.mutate(2, 0, 0)
    before, refreshes = events(d), sim.refreshes
    d.start()
    wait_for(lambda: events(d) >= before + 2 and sim.refreshes > refreshes, 30,
             "the restarted daemon to poll with its stored token")
    assert sim.refused_refreshes == 0
    assert d.terminate() == 0
    assert_no_token_in(at_rest(d), sim)
    for log in d.dir.glob("log*.txt"):
        assert_no_token_in(log.read_text(), sim)

    # What it holds is the live token, for a reader with the key; `status` shows none.
    async def read() -> str:
        reader = await FeedReader.open(load(d.config).store)
        try:
            return str((await reader.progress("ap"))[TOKEN_KEY]["refresh_token"])
        finally:
            await reader.close()
    assert sim.refresh_token_valid(anyio.run(read))
    status = streamd_cli("status", "--json", "-c", str(d.config))
    assert status.returncode == 0 and '"secret.oauth": "<secret>"' in status.stdout, status.stdout
    assert_no_token_in(status.stdout + status.stderr, sim)


def test_tokens_stored_in_clear_are_encrypted_when_a_key_is_added(
        streamd_proc: Callable[..., Streamd], background: Background, tmp_path: Path) -> None:
    sim = serve(background, tmp_path, Knobs(records=4, token_ttl=2.0))
    d = streamd_proc(config(sim))
    authorize(d, sim)
    d.start()
    assert f"store: credentials of source ap are stored in clear in {d.db}" in d.log()
    wait_for(lambda: events(d) >= 24 and sim.refreshes >= 2, 30, "polls and token rotations")
    # Kill only with no rotation in flight: one killed between the identity server's answer
    # and the commit spends the refresh token (as docs/providers/asperion.md says), and the
    # restart below would be refused. So: tokens from now on live an hour, and the kill
    # waits until the daemon has committed the first of those.
    sim.knobs.token_ttl = 3600.0
    rotated = sim.refreshes
    wait_for(lambda: sim.refreshes > rotated and sim.identity.issued[-1].encode() in stored_token(d),
             30, "a long-lived token committed")
    d.kill()  # the WAL keeps the tokens of every rotation
    assert stored_token(d).startswith(b"{")
    assert sim.identity.issued[-1].encode() in at_rest(d)

    key = make_key(tmp_path / "secrets.key")
    d.config.write_text(config(sim, key))
    d.start()
    assert (f"store: encrypted 1 credential(s) that were stored in clear, with store.secrets_key "
            f"(key {kid(key)})") in d.log()
    assert stored_token(d).startswith(b"sealed.v1:")
    # Not one token left in clear, in the database or its WAL.
    assert_no_token_in(at_rest(d), sim)
    sim.knobs.token_ttl = 2.0
    sim.identity.expire_access_tokens()  # the next poll refreshes, with the sealed token
    sim.mutate(2, 0, 0)
    before, refreshes = events(d), sim.refreshes
    wait_for(lambda: events(d) >= before + 2 and sim.refreshes > refreshes, 30, "polls with the key")
    assert sim.refused_refreshes == 0
    assert d.terminate() == 0
    assert_no_token_in(at_rest(d), sim)


def test_a_kill_inside_a_rotation_is_named_and_streamd_auth_recovers(
        streamd_proc: Callable[..., Streamd], background: Background, tmp_path: Path) -> None:
    """SIGKILL after the identity server rotated the refresh token and before its answer
    was committed: the token is spent, as documented. The daemon recorded the rotation
    before asking (a fingerprint, never the token, sealing or not), so the next start
    says exactly what happened, counts it, and `streamd auth` brings it back."""
    sim = serve(background, tmp_path, Knobs(records=4))
    key = make_key(tmp_path / "secrets.key")
    d = streamd_proc(config(sim, key))
    authorize(d, sim)
    sim.expire_access_tokens()  # the daemon's first request gets 401: it rotates at once
    sim.knobs.refresh_answer_delay = 60.0
    d.start()
    wait_for(lambda: sim.unanswered_rotations == 1, 30, "a rotation whose answer is held")
    d.kill()
    sim.knobs.refresh_answer_delay = 0.0

    async def held_token() -> str:
        reader = await FeedReader.open(load(d.config).store)
        try:
            return str((await reader.progress("ap"))[TOKEN_KEY]["refresh_token"])
        finally:
            await reader.close()
    spent = anyio.run(held_token)
    assert not sim.refresh_token_valid(spent)
    (rotation,), = d.query("SELECT value FROM source_state WHERE source = 'ap' AND key = ?", (ROTATION_KEY,))
    assert json.loads(rotation)["spending"] == fingerprint(spent)
    assert_no_token_in(at_rest(d), sim)  # the record of the rotation holds no token either

    d.start()
    said = "source ap: failed for"
    what = "the refresh token was spent by a crash during its rotation: run `streamd auth ap`"
    wait_for(lambda: what in readyz(d).text, 30, "/readyz to say what happened")
    r = readyz(d)
    assert r.status_code == 503 and f"{said}" in r.text and r.text.count(what) == 1, r.text
    assert f"source ap: {what} (polling stopped; until then)" in d.log()
    metrics = httpx.get(d.url + "/metrics", timeout=5).text
    assert 'streamd_source_refresh_tokens_lost_total{source="ap"} 1.0' in metrics
    status = streamd_cli("status", "-c", str(d.config))
    assert status.returncode == 0 and what in status.stdout, status.stdout + status.stderr
    assert sim.refused_refreshes == 1

    authorize(d, sim)  # what it says to do, while it runs
    wait_for(lambda: readyz(d).status_code == 200 and events(d) == 24, 30, "the source back, polling")
    assert sim.refused_refreshes == 1
    (rotation,), = d.query("SELECT value FROM source_state WHERE source = 'ap' AND key = ?", (ROTATION_KEY,))
    assert json.loads(rotation) is None  # its rotations since were committed
    assert d.terminate() == 0
    assert_no_token_in(at_rest(d), sim)


@pytest.mark.parametrize("then", ["another key", "no key"])
def test_a_token_the_key_does_not_open_stops_that_source_only(
        then: str, streamd_proc: Callable[..., Streamd], background: Background, tmp_path: Path) -> None:
    sim = serve(background, tmp_path, Knobs(records=4))
    first = make_key(tmp_path / "first.key")
    d = streamd_proc(config(sim, first, other=SYNTHETIC))
    authorize(d, sim)
    d.start()
    wait_for(lambda: events(d) >= 24, 30, "a first poll")
    assert d.terminate() == 0

    second = make_key(tmp_path / "second.key")
    d.config.write_text(config(sim, second if then == "another key" else None, other=SYNTHETIC))
    d.start()
    wait_for(lambda: "source ap: failed" in readyz(d).text, 15, "/readyz to name the failed source")
    r = readyz(d)
    assert r.status_code == 503
    why = (f"was encrypted with key {kid(first)}, not with store.secrets_key (key {kid(second)}): "
           "set store.secrets_key to the key it was stored with" if then == "another key" else
           f"is encrypted (key {kid(first)}), but store.secrets_key is not set: set it to the key "
           "it was stored with")
    for text in (r.text, d.log()):
        assert f"the credential stored under 'secret.oauth' {why}" in text
        assert "streamd auth ap" in text
    # The other source goes on, and the daemon stays up; the failed source keeps looking
    # for new credentials in the store, quietly.
    before = events(d, "gen")
    wait_for(lambda: events(d, "gen") > before + 50, 10, "the synthetic source to go on")
    wait_for(lambda: failed_for(d) > CREDENTIALS_CHECK, 15, "a look for new credentials")
    assert d.proc is not None and d.proc.poll() is None
    assert "Traceback" not in d.log()

    # As /readyz says: `streamd auth` again (with the key the daemon has), and it resumes.
    sim.mutate(2, 0, 0)
    before = events(d)
    authorize(d, sim)
    wait_for(lambda: events(d) >= before + 2, 30, "the source to resume with the new token")
    wait_for(lambda: readyz(d).status_code == 200, 10, "/readyz to be 200 again")
    assert d.terminate() == 0
    for log in d.dir.glob("log*.txt"):
        assert_no_token_in(log.read_text(), sim)
    assert_no_token_in(r.text, sim)


def test_a_rotated_key_reencrypts_the_tokens_at_start(
        streamd_proc: Callable[..., Streamd], background: Background, tmp_path: Path) -> None:
    sim = serve(background, tmp_path, Knobs(records=4))
    old, new = make_key(tmp_path / "old.key"), make_key(tmp_path / "new.key")
    d = streamd_proc(config(sim, old))
    authorize(d, sim)
    assert stored_token(d).startswith(b"sealed.v1:" + bytes.fromhex(kid(old)))

    d.config.write_text(config(sim, new, previous=old))
    d.start()
    assert ("store: re-encrypted 1 credential(s) from store.secrets_key_previous to store.secrets_key "
            f"(key {kid(new)})") in d.log()
    assert stored_token(d).startswith(b"sealed.v1:" + bytes.fromhex(kid(new)))
    wait_for(lambda: events(d) >= 24, 30, "a poll")
    assert d.terminate() == 0

    d.config.write_text(config(sim, new))  # the old key can go
    sim.mutate(2, 0, 0)
    before = events(d)
    d.start()
    wait_for(lambda: events(d) >= before + 2, 30, "a poll with the new key alone")
    assert sim.refused_refreshes == 0
    assert d.terminate() == 0


# ---------------------------------------------------------------- the store alone

@pytest.mark.anyio
async def test_a_sealed_token_copied_to_another_source_does_not_open(tmp_path: Path) -> None:
    key = make_key(tmp_path / "k")
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text(f'[store]\npath = "feed.db"\nsecrets_key = "file:{key}"\n')
    store = load(cfg_file).store
    await write_state(store, "a", {TOKEN_KEY: {"refresh_token": "r-a"}, "cursor": 3})
    con = sqlite3.connect(store.path)
    with con:
        con.execute("INSERT INTO source_state SELECT 'b', key, value, updated FROM source_state"
                    " WHERE source = 'a'")
    con.close()
    reader = await FeedReader.open(store)
    try:
        assert await reader.progress("a") == {TOKEN_KEY: {"refresh_token": "r-a"}, "cursor": 3}
        with pytest.raises(SecretUnreadable, match="altered, or copied from another source's row"):
            await reader.progress("b")
        assert (await reader.all_progress())["b"][0] == {TOKEN_KEY: "<secret>", "cursor": 3}
    finally:
        await reader.close()



@pytest.mark.anyio
async def test_sealing_at_start_zeroes_the_cleartext_where_sqlite_would_keep_it(tmp_path: Path) -> None:
    store = StoreConfig(path=str(tmp_path / "feed.db"))
    token = base64.urlsafe_b64encode(os.urandom(32)).decode()
    await write_state(store, "ap", {TOKEN_KEY: {"refresh_token": token}, "cursor": 3})
    db = await connect(store)
    try:
        await db.execute("PRAGMA secure_delete=0")  # the default of most builds of SQLite
        await seal_at_rest(db, Sealer(os.urandom(32)), store.path)
        assert (await db.execute_fetchall("PRAGMA secure_delete")) == [(0,)]  # put back
    finally:
        await db.close()
    files = [Path(store.path + side) for side in ("", "-wal", "-shm")]
    assert not any(token.encode() in f.read_bytes() for f in files if f.exists())


# ---------------------------------------------------------------- streamd check

ASPERION = '[sources.ap]\nprovider = "asperion"\nclient_id = "c"\nclient_secret = "env:ASP_SECRET"\n'


@pytest.mark.parametrize("content", ["not a key, but a password!", base64.b64encode(b"x" * 16).decode()])
def test_check_refuses_a_malformed_key_without_printing_it(tmp_path: Path, content: str) -> None:
    (tmp_path / "key").write_text(content + "\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[store]\nsecrets_key = "file:{tmp_path / "key"}"\n' + ASPERION)
    for command in ("check", "run"):
        r = streamd_cli(command, "-c", str(cfg), env={"ASP_SECRET": "s"})
        assert r.returncode == EX_CONFIG, r.stderr
        assert f"store.secrets_key: file:{tmp_path / 'key'}: " in r.stderr
        assert "openssl rand -base64 32" in r.stderr
        assert content not in r.stdout + r.stderr
    assert not (tmp_path / "feed.db").exists()


def test_check_refuses_a_previous_key_without_a_key(tmp_path: Path) -> None:
    make_key(tmp_path / "old.key")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[store]\nsecrets_key_previous = "file:{tmp_path / "old.key"}"\n')
    r = streamd_cli("check", "-c", str(cfg))
    assert r.returncode == EX_CONFIG
    assert "store.secrets_key_previous: only decrypts during a rotation" in r.stderr


def test_check_warns_when_tokens_would_be_stored_in_clear(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    env = {"ASP_SECRET": "s"}
    warning = "warning: [store] secrets_key is not set: the tokens source ap keeps in"
    cfg.write_text(ASPERION)
    for flags in ((), ("-q",)):
        r = streamd_cli("check", *flags, "-c", str(cfg), env=env)
        assert r.returncode == 0 and warning in r.stderr, r.stderr
    key = make_key(tmp_path / "key")
    cfg.write_text(f'[store]\nsecrets_key = "file:{key}"\n' + ASPERION)
    r = streamd_cli("check", "-c", str(cfg), env=env)
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    assert key.read_text().strip() not in r.stdout + r.stderr
    assert f"<redacted file:{key}>" in r.stdout
    cfg.write_text(SYNTHETIC)  # keeps no tokens: nothing to warn about
    r = streamd_cli("check", "-c", str(cfg))
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
