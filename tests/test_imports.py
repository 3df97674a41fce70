"""What `streamd run` loads: only what its configured sources and sinks need.

Every package imported stays resident for the life of the daemon, and memory is
budgeted (peak RSS at most 100 MB under a full-speed run, docs/benchmarks.md):
asyncpg, nats, asyncssh and cryptography are imported where the sink or the store
feature that needs them is built, never with the modules every config loads.

Seen from a real `streamd run`: CPython's verbose mode (`PYTHONVERBOSE=1`) has the import
system write `import 'name' # loader` to stderr for every module it loads, however it
was asked for (an `import` statement or the registries' `importlib.import_module`), with
the real packages installed and no hook in streamd. (`PYTHONPROFILEIMPORTTIME` would
not do: it misses the modules `importlib.import_module` loads.)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime

import httpx

from streamd.providers.synthetic import wire

from .conftest import Streamd, feed_lines, wait_for

TOKEN = "imports-test-token"
CONFIG = """
[store]
path = "feed.db"
[http]
listen = "127.0.0.1:0"
[sources.hook]
provider = "synthetic"
generate = false
webhook = true
token = "env:IMPORTS_HOOK_TOKEN"
[sinks.file]
type = "file"
path = "out/feed.jsonl"
[sinks.out]
type = "stdout"
"""
_LOADED = re.compile(r"^import '([\w.]+)' # ", re.MULTILINE)


def test_a_run_without_postgres_nats_sftp_or_a_secrets_key_never_imports_their_libraries(
        streamd_proc: Callable[..., Streamd]) -> None:
    d = streamd_proc(CONFIG, env={"IMPORTS_HOOK_TOKEN": TOKEN, "PYTHONVERBOSE": "1"})
    d.start()
    # An event through the whole path (webhook, writer, both sinks), so that what a
    # delivery imports on first use is in the trace too.
    body = b"[" + wire.record(1, 0, ["t"], datetime(2026, 1, 1)) + b"]"
    r = httpx.post(f"{d.url}/webhooks/hook", content=body, timeout=10,
                   headers={"content-type": "application/json", "authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    wait_for(lambda: len(feed_lines(d.dir / "out" / "feed.jsonl")) == 1, 10, "the event in the file")
    assert d.terminate() == 0
    imported = set(_LOADED.findall(d.log()))
    # The trace is read right: the modules this run needs are in it.
    assert {"aiosqlite", "streamd.store.writer", "streamd.sinks.file", "streamd.sinks.stdout"} <= imported
    loaded = sorted(m for m in imported if m.split(".")[0] in ("asyncpg", "nats", "asyncssh", "cryptography"))
    assert loaded == []
