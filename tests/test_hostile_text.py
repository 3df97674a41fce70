"""Text from outside never forges a log line nor reaches a terminal raw: a Connec! id
holding a line break, a journald priority and an ANSI escape, through a real `streamd
run` (text logs, and journald's format), `streamd dlq list` and `streamd tail` (to a
pipe and to a real pseudo-terminal), `/readyz` and `streamd status` (a receiver's
answer), and `streamd check` (a hostile name in the config)."""

from __future__ import annotations

import codecs
import copy
import json
import logging
import os
import pty
import re
import select
import subprocess
import sys
import time
import tty
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import unquote

import anyio
import httpx
import pytest

from streamd import logs
from streamd.errors import EX_CONFIG
from streamd.escape import escape, escape_json

from .conftest import Background, Streamd, feed_lines, streamd_cli, wait_for
from .connec_samples import GROUP, SAMPLES
from .http_receiver import Receiver
from .test_connec import API_ID, API_KEY, basic

FORGED = "\n<0>2026-01-01T00:00:00.000Z ERROR   streamd: forged\x1b[31m"
HOSTILE_ID = "item-1" + FORGED
NAME = "Beans \u202egnp.exe\x9b31m"  # a bidi override and a C1 CSI: JSON leaves both raw
NOT_JSON = b"\x1b[2J\x1b[31mnot json\n<0>forged too"
CONFIG = """
[store]
path = "feed.db"
[http]
listen = "127.0.0.1:0"
[sources.mno]
provider = "connec"
api_id = "app-19op"
api_key = "env:HOSTILE_CONNEC_KEY"
[sinks.file]
type = "file"
path = "out/feed.jsonl"
"""
ENV = {"HOSTILE_CONNEC_KEY": API_KEY}


def item(ident: str, **fields: object) -> dict[str, object]:
    out = copy.deepcopy(SAMPLES["items"])
    out["id"] = [{"provider": "connec", "id": ident, "realm": GROUP}]
    out.update(fields)
    return out


def hostile_run(d: Streamd, extra_env: dict[str, str] | None = None) -> None:
    """Run the daemon, send it what a hostile Connec! would, stop it."""
    d.start(extra_env=extra_env)
    with httpx.Client(base_url=d.url, timeout=10) as http:
        path = "/maestrano/connec/notifications"
        rejected = item(HOSTILE_ID, created_at="yesterday")  # rejected: its id is in the reason
        accepted = item("item-2" + FORGED, name=NAME)
        r = http.post(path, json={"items": [rejected, accepted]}, headers=basic(API_ID, API_KEY))
        assert r.status_code == 200, r.text
        r = http.post(path, content=NOT_JSON, headers={**basic(API_ID, API_KEY),
                                                       "content-type": "application/json"})
        assert r.status_code == 400
    wait_for(lambda: "not json" in d.log() or "notification:" in d.log(), 10, "the rejection logged")
    assert d.terminate() == 0


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Streamd]:
    d = Streamd(tmp_path_factory.mktemp("hostile"), CONFIG, ENV)
    try:
        hostile_run(d)
        yield d
    finally:
        d.stop()


def on_terminal(*args: str, env: dict[str, str], timeout: float = 30.0) -> bytes:
    """The stdout of `streamd ARGS` run on a real pseudo-terminal (raw mode: the bytes the
    program wrote, no CR added)."""
    master, slave = pty.openpty()
    tty.setraw(slave)
    proc = subprocess.Popen([sys.executable, "-m", "streamd", *args], stdout=slave,
                            stderr=subprocess.PIPE, env={**os.environ, **env})
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the program exited and closed the terminal
                break
            if not chunk:
                break
            out += chunk
        assert proc.wait(timeout) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        os.close(master)
        if proc.stderr:
            proc.stderr.close()
    return bytes(out)


# ---------------------------------------------------------------- the function

@pytest.mark.parametrize("text", [
    "plain ascii", "élan 😀 中文", HOSTILE_ID, NAME, "a\\nb", "\\", "\t\r\x00\x7f\x85\u2028\u2029",
    "\u200e\u202a\u2066\ufeff\U000e0001\udc80", "C:\\x41\\u2028",
])
def test_escape_leaves_one_printable_line_and_is_injective(text: str) -> None:
    out = escape(text)
    assert out.isprintable(), out
    # Decoding the escapes gives the text back: two texts never print the same.
    assert codecs.decode(out.encode("ascii", "backslashreplace"), "unicode_escape") == text
    if text.isprintable() and "\\" not in text:
        assert out is text  # nothing to do: not even a copy (logging calls this per record)
    doc = json.dumps({"v": text}, ensure_ascii=False)
    assert json.loads(escape_json(doc)) == {"v": text}
    assert all(c.isprintable() or c in "\n" for c in escape_json(doc))


# ---------------------------------------------------------------- logs

@pytest.mark.parametrize("journald", [False, True], ids=["text", "journald"])
def test_a_hostile_id_forges_no_log_line(tmp_path: Path, journald: bool) -> None:
    d = Streamd(tmp_path / "d", CONFIG, ENV)
    try:
        hostile_run(d, {"JOURNAL_STREAM": "8:1234"} if journald else {"JOURNAL_STREAM": ""})
    finally:
        d.stop()
    log = d.log()
    assert "\x1b" not in log and "\x9b" not in log
    # The rejection is logged, its reason escaped on the record's own line.
    (line,) = [x for x in log.splitlines() if "payload rejected" in x and "created_at" in x]
    assert escape(HOSTILE_ID) in line
    assert line.startswith("<4>streamd.store: ") if journald else " WARNING " in line
    for x in log.splitlines():
        assert "forged" not in x or "\\n<0>" in x, f"a forged line: {x!r}"
        if journald:
            assert re.match(r"<[2-7]>streamd[.\w]*: ", x), f"not a record of ours: {x!r}"
        else:
            assert re.match(r"\d{4}-\d\d-\d\dT[\d:.]+Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) +streamd", x), x


def _traceback_record(level: int = logging.ERROR) -> logging.LogRecord:
    try:
        raise ValueError(f"bad id {HOSTILE_ID}")
    except ValueError:
        return logging.getLogger("streamd.test").makeRecord(
            "streamd.test", level, __file__, 1, "sink %s: crashed", ("out" + FORGED,), sys.exc_info())


@pytest.mark.parametrize("journald", [False, True], ids=["text", "journald"])
def test_a_traceback_keeps_its_lines_each_escaped_and_indented(journald: bool) -> None:
    out = logs._Text(journald).format(_traceback_record())
    first, *rest = out.split("\n")
    assert first.endswith("sink " + escape("out" + FORGED) + ": crashed")
    assert rest[0].endswith("Traceback (most recent call last):") and len(rest) >= 4
    prefix = "<3>" + logs.INDENT if journald else logs.INDENT
    for line in rest:  # the exception's own line break is a line, but not one that forges
        assert line.startswith(prefix), repr(line)
        assert line.isprintable(), repr(line)
    assert any(line.endswith("ValueError: bad id item-1") for line in rest)
    assert prefix + "<0>2026-01-01T00:00:00.000Z ERROR   streamd: forged\\x1b[31m" in rest


# ---------------------------------------------------------------- dlq list, tail

def test_dlq_list_escapes_reasons_and_shows_raw_bytes_by_where_they_go(fed: Streamd) -> None:
    args = ("dlq", "list", "-c", str(fed.config), "--raw")
    piped = streamd_cli(*args, env=ENV)
    assert piped.returncode == 0, piped.stderr
    rows = [x for x in piped.stdout.splitlines() if "source mno" in x]
    assert len(rows) == 2 and any(escape(HOSTILE_ID) in x for x in rows)
    # To a pipe, --raw is the payload's exact bytes (for jq, xxd, a replay) ...
    assert NOT_JSON.decode() in piped.stdout
    # ... without --raw, no byte of a payload or a reason reaches the output raw.
    plain = streamd_cli("dlq", "list", "-c", str(fed.config), env=ENV).stdout
    assert len(plain.splitlines()) == 2 and all(x.isprintable() for x in plain.splitlines())
    # On a terminal, --raw payloads are escaped, one line each.
    shown = on_terminal(*args, env=ENV).decode()
    assert "\x1b" not in shown and all(x.isprintable() for x in shown.splitlines())
    assert "        " + escape(NOT_JSON.decode()) in shown.splitlines()
    assert len(shown.splitlines()) == 4


def test_tail_escapes_on_a_terminal_what_json_leaves_raw(fed: Streamd) -> None:
    args = ("tail", "-c", str(fed.config), "-n", "5")
    piped = streamd_cli(*args, env=ENV).stdout.encode()
    # To a pipe: the feed's own bytes, the file sink's line. JSON has escaped the C0
    # controls (the id's line break and ESC) but not the bidi override and the C1 CSI.
    assert piped.splitlines(keepends=True) == feed_lines(fed.dir / "out" / "feed.jsonl")
    assert b"\x1b" not in piped and b"\\u001b[31m" in piped and NAME.encode() in piped
    shown = on_terminal(*args, env=ENV)
    assert NAME.encode() not in shown and b"\\u202egnp.exe\\u009b31m" in shown
    assert all(x.isprintable() for x in shown.decode().splitlines())
    assert [json.loads(x) for x in shown.splitlines()] == [json.loads(x) for x in piped.splitlines()]


# ---------------------------------------------------------------- /readyz, status

HOOK = """
[store]
path = "feed.db"
[http]
listen = "127.0.0.1:0"
[sources.gen]
provider = "synthetic"
count = 1
[sinks.hook]
type = "http"
url = "{url}/hook"
backoff = {{ min = "50ms", max = "1h" }}
"""


def test_readyz_and_status_escape_a_receivers_answer(streamd_proc: Callable[..., Streamd],
                                                     background: Background) -> None:
    rx = Receiver()
    rx.knobs.refuse, rx.knobs.refuse_status = b"specversion", 503
    rx.knobs.refuse_body = ("\x1b[2J\x1b[31mdown" + FORGED).encode()
    background.start(rx.serve)
    wait_for(lambda: rx.url, 10, "the receiver")
    d = streamd_proc(HOOK.format(url=rx.url))
    d.start()

    def readyz() -> str:
        text = httpx.get(f"{d.url}/readyz", timeout=5).text
        return text if "down" in text else ""

    text = wait_for(readyz, 10, "the receiver's answer in /readyz")
    assert "\x1b" not in text and "\\x1b[2J\\x1b[31mdown" in text
    (line,) = [x for x in text.splitlines() if x.startswith("sink hook: retrying")]
    assert "receiver answered 503" in line
    status = streamd_cli("status", "-c", str(d.config))
    assert status.returncode == 0, status.stderr
    assert "\x1b" not in status.stdout and "\\x1b[2J\\x1b[31mdown" in status.stdout
    assert all(x.isprintable() for x in status.stdout.splitlines())


# ---------------------------------------------------------------- check

def test_check_escapes_what_a_problem_quotes(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[sinks."x\\u001b[31m\\n<0>forged"]\ntype = "stdout"\n')
    r = streamd_cli("check", "-c", str(cfg))
    assert r.returncode == EX_CONFIG
    assert "\x1b" not in r.stderr and "\\x1b[31m\\n<0>forged" in r.stderr
    assert not any(x.startswith("<0>") for x in r.stderr.splitlines())


# ---------------------------------------------------------------- streamd auth

@pytest.mark.anyio
async def test_auth_escapes_the_error_a_provider_redirects_with(tmp_path: Path) -> None:
    from streamd.providers.asperion import simulator as asperion_sim

    from .test_asperion import free_port

    async with asperion_sim.simulator(tmp_path / "sim", asperion_sim.Knobs()) as sim:
        redirect = f"http://127.0.0.1:{free_port()}/callback"
        cfg = tmp_path / "config.toml"
        cfg.write_text('[store]\npath = "feed.db"\n' + sim.source_toml("ap", redirect_uri=f'"{redirect}"'))
        proc = await anyio.open_process([sys.executable, "-m", "streamd", "auth", "ap", "-c", str(cfg)],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
        try:
            assert proc.stdout is not None and proc.stderr is not None
            out = b""
            with anyio.fail_after(20):
                while b"waiting for the redirect" not in out:
                    out += await proc.stdout.receive()
            m = re.search(rb"[?&]state=([^&\s]+)", out)
            assert m, out
            # The identity server sends the browser back with an error of its choosing.
            async with httpx.AsyncClient() as browser:
                await browser.get(redirect, params={"state": unquote(m.group(1).decode()),
                                                    "error": "access_denied",
                                                    "error_description": "no" + FORGED})
            with anyio.fail_after(20):
                assert await proc.wait() == 1
            err = b""
            with anyio.move_on_after(5):
                async for chunk in proc.stderr:
                    err += chunk
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.aclose()
    text = err.decode()
    assert "the provider said access_denied: no" + escape(FORGED) in text
    assert "\x1b" not in text and not any(x.startswith("<0>") for x in text.splitlines())
