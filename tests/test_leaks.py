"""Secrets stay secret where streamd shows things: key material pasted into the config,
a token in an http sink's query string, a password in a URL, credential headers, plain
http:// off this machine; through real `streamd check` and `streamd run` processes,
`/readyz` over a real socket, and the log formatters and readiness reasons on their own."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from streamd import certs as certs_mod
from streamd import logs
from streamd.configfile import parse, render
from streamd.errors import EX_CONFIG
from streamd.health import Health, State
from streamd.secrets import redact, redact_url

from .conftest import Streamd, streamd_cli, wait_for
from .test_http_sink import problems, sink_toml

QUERY_SECRET = "abc-query-secret"
URL_PASSWORD = "pw-in-the-url"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def check(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    cfg = tmp_path / "config.toml"
    cfg.write_text(text)
    r = streamd_cli("check", "-c", str(cfg), env=env)
    return r.returncode, r.stdout, r.stderr


# ---------------------------------------------------------------- key material

def asteria_toml(certs: certs_mod.Certs, key: str) -> str:
    return (f'[store]\npath = "feed.db"\n[sources.gw]\nprovider = "asteria"\n'
            f'url = "wss://gateway.example/partner"\nclient_id = "partner-1"\n'
            f'cert = "{certs.client_cert}"\nkey = {json.dumps(key)}\nca = "{certs.ca}"\n')


def test_an_inline_pem_key_is_refused_and_never_printed(tmp_path: Path) -> None:
    certs = certs_mod.make(tmp_path / "certs")
    pem = certs.client_key.read_text()
    body = pem.splitlines()[1]
    text = asteria_toml(certs, pem)
    code, out, err = check(tmp_path, text)
    assert code == EX_CONFIG
    assert "sources.gw.key: holds PEM text; give the path of a file that holds it, or a secret " \
           "reference" in err
    assert body not in out + err and "PRIVATE KEY" not in out + err
    (tmp_path / "config.toml").write_text(text)
    run = streamd_cli("run", "-c", str(tmp_path / "config.toml"))
    assert run.returncode == EX_CONFIG and "sources.gw.key: holds PEM text" in run.stderr
    assert body not in run.stdout + run.stderr
    # The same key through a reference is what the field is for: accepted, shown as it.
    code, out, err = check(tmp_path, asteria_toml(certs, "env:LEAKS_ASTERIA_KEY"),
                           env={"LEAKS_ASTERIA_KEY": pem})
    assert code == 0, err
    assert '"key": "<redacted env:LEAKS_ASTERIA_KEY>"' in out and body not in out + err


def test_render_never_shows_key_material_wherever_it_is() -> None:
    pem = "-----BEGIN OPENSSH PRIVATE KEY----- b3BlbnNzaC1rZXktdjEAAAAA -----END OPENSSH PRIVATE KEY-----"
    out = render(parse(f'[sources.s]\nprovider = "synthetic"\ntenants = ["acme", {json.dumps(pem)}]\n'))
    assert "b3BlbnNzaC1rZXktdjEAAAAA" not in out
    assert '"<redacted key material>"' in out and '"acme"' in out


# ---------------------------------------------------------------- URLs

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
url = "http://127.0.0.1:{port}/hook?token={secret}&v=2"
backoff = {{ min = "50ms", max = "1h" }}
"""


def test_a_query_token_shows_nowhere(tmp_path: Path, streamd_proc: Callable[..., Streamd]) -> None:
    text = HOOK.format(port=closed_port(), secret=QUERY_SECRET)
    code, out, err = check(tmp_path, text)
    assert code == 0, err
    assert "/hook?token=***&v=***" in out and QUERY_SECRET not in out + err
    d = streamd_proc(text)
    d.start()

    def failing() -> str:  # the sink cannot connect: /readyz names its URL
        body = httpx.get(f"{d.url}/readyz", timeout=5).text
        return body if "sink hook: retrying" in body else ""

    readyz = wait_for(failing, 10, "the sink's failure in /readyz")
    assert "/hook?token=***&v=***: cannot connect" in readyz
    shown = [readyz, httpx.get(f"{d.url}/readyz", headers={"accept": "application/json"}).text,
             streamd_cli("status", "-c", str(d.config)).stdout]
    assert d.terminate() == 0
    shown.append(d.log())
    for s in shown:
        assert QUERY_SECRET not in s


def test_a_password_in_a_url_shows_nowhere(tmp_path: Path) -> None:
    # An http sink refuses it: a password in the URL is a secret written inline ...
    code, out, err = check(tmp_path, sink_toml(f"https://user:{URL_PASSWORD}@receiver.example/hook"))
    assert code == EX_CONFIG and "sinks.out.url: must not hold credentials" in err
    assert URL_PASSWORD not in out + err
    # ... and where a URL may hold one (a provider's API), check shows it redacted.
    code, out, err = check(tmp_path, f"""
[sources.mno]
provider = "connec"
api_id = "app"
api_key = "env:LEAKS_CONNEC_KEY"
api_url = "https://user:{URL_PASSWORD}@api.example/?token={QUERY_SECRET}"
""", env={"LEAKS_CONNEC_KEY": "k"})
    assert code == 0, err
    assert '"api_url": "https://user:***@api.example/?token=***"' in out
    assert URL_PASSWORD not in out + err and QUERY_SECRET not in out + err


@pytest.mark.parametrize("url, want", [
    ("https://user:pw@host:8443/p/q?token=abc&page=2#frag", "https://user:***@host:8443/p/q?token=***&page=***#***"),
    ("https://ghp_token@github.example/x", "https://***@github.example/x"),
    ("http://h/?bare-token", "http://h/?***"),
    ("http://h/path", "http://h/path"),
    ("http://[::1/broken?token=abc", "http://***"),
])
def test_redact_url(url: str, want: str) -> None:
    assert redact_url(url) == want


def _record(msg: str, exc: BaseException | None = None) -> logging.LogRecord:
    info = (type(exc), exc, None) if exc is not None else None
    return logging.getLogger("streamd.test").makeRecord("streamd.test", logging.ERROR, __file__, 1,
                                                         msg, (), info)


@pytest.mark.parametrize("formatter", [logs._Text(False), logs._Text(True), logs._Json()],
                         ids=["text", "journald", "json"])
def test_log_formatters_redact_urls_and_key_material(formatter: logging.Formatter) -> None:
    """An HTTP library's error names the URL it failed on, query token and all."""
    exc = ValueError(f"Invalid URL 'https://u:{URL_PASSWORD}@h.example/x?token={QUERY_SECRET}'")
    out = formatter.format(_record(f"sink x: GET http://h.example/?token={QUERY_SECRET} failed; "
                                   "-----BEGIN PRIVATE KEY-----\nMIIEvgIBADANBg\n-----END PRIVATE KEY-----",
                                   exc))
    assert QUERY_SECRET not in out and URL_PASSWORD not in out and "MIIEvgIBADANBg" not in out
    assert "http://h.example/?token=***" in out and "https://u:***@h.example/x?token=***" in out
    assert "<redacted key material>" in out


def test_readiness_reasons_are_kept_redacted() -> None:
    health = Health(clock=lambda: 100.0)
    sink = health.add("sink", "hook", grace=5.0)
    sink.set(State.RETRYING, f"httpx: Invalid URL http://h/x?token={QUERY_SECRET}")
    source = health.add("source", "api")
    source.set(State.RETRYING, "starting")
    source.reason = f"GET https://u:{URL_PASSWORD}@api.example/ failed"  # as PollHealth does
    _, lines = health.report()
    assert "sink hook: retrying for 0s: httpx: Invalid URL http://h/x?token=***" in lines
    assert "source api: retrying for 0s: GET https://u:***@api.example/ failed" in lines
    assert QUERY_SECRET not in repr(lines) and URL_PASSWORD not in repr(lines)
    assert redact("no url here") == "no url here"
    # The punctuation after a URL is not part of it; redacting twice changes nothing.
    once = redact(f"failed at https://h/x?a={QUERY_SECRET}: timeout (see https://h/y).")
    assert once == "failed at https://h/x?a=***: timeout (see https://h/y)." == redact(once)


# ---------------------------------------------------------------- plain http://

def hook_toml(url: str, **keys: object) -> str:
    return '[store]\npath = "feed.db"\n[http]\nlisten = "127.0.0.1:0"\n' + sink_toml(url, **keys)


def test_plain_http_off_this_machine_is_refused_unless_allowed(
        tmp_path: Path, streamd_proc: Callable[..., Streamd]) -> None:
    url = "http://receiver.invalid/hook"
    env = {"LEAKS_HOOK_TOKEN": "t0ken"}
    headers = {"Authorization": "Bearer env:LEAKS_HOOK_TOKEN"}
    code, _, err = check(tmp_path, hook_toml(url, headers=headers), env)
    assert code == EX_CONFIG
    assert ("sinks.out.url: plain http:// to receiver.invalid would send the events and the "
            "credential headers unencrypted; use https://, or set allow_http = true") in err
    allowed = hook_toml(url, headers=headers, allow_http=True)
    code, _, err = check(tmp_path, allowed, env)
    assert code == 0, err
    warning = ("sinks.out.url: plain http:// to receiver.invalid: the events and the credential "
               "headers cross the network unencrypted (allow_http = true)")
    assert f"streamd: warning: {warning}" in err
    d = streamd_proc(allowed, env=env)
    d.start()
    assert "WARNING streamd.sink: sink out: url: plain http:// to receiver.invalid: " in d.log()
    assert d.terminate() == 0


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/h", "http://127.8.0.1/h", "http://localhost/h",
                                 "http://LOCALHOST:80/h", "http://[::1]:9/h"])
def test_plain_http_to_this_machine_needs_no_allowance(url: str) -> None:
    assert parse(sink_toml(url)).sinks["out"].url == url  # type: ignore[attr-defined]


def test_allow_http_is_only_for_http() -> None:
    assert "sinks.out.allow_http: only used with an http:// url" in problems(
        sink_toml("https://receiver.example/", allow_http=True))
    assert any(p.startswith("sinks.out.url: plain http:// to 10.0.0.7 would send the events "
                            "unencrypted") for p in problems(sink_toml("http://10.0.0.7/")))


# ---------------------------------------------------------------- credential headers

@pytest.mark.parametrize("name", ["X-Auth-Token", "Authorization", "x-api-key", "X-Hub-Signature-256",
                                  "Cookie", "X-Session-Id", "X-Client-Secret", "X-Password",
                                  "X-Credential", "X-Jwt", "Proxy-Authorization", "X-Csrf-Token"])
def test_a_header_named_like_a_credential_must_be_a_reference(name: str) -> None:
    found = problems(sink_toml("https://receiver.example/", headers={name: "inline-header-secret"}))
    assert any(p.startswith(f"sinks.out.headers.{name}: a credential is written as a secret "
                            "reference") for p in found), found
    assert not any("inline-header-secret" in p for p in found)


def test_credential_headers_in_check_refused_inline_shown_redacted(tmp_path: Path) -> None:
    code, out, err = check(tmp_path, hook_toml("https://receiver.example/hook",
                                               headers={"X-Auth-Token": "inline-header-secret"}))
    assert code == EX_CONFIG and "sinks.out.headers.X-Auth-Token: a credential is written" in err
    assert "inline-header-secret" not in out + err
    code, out, err = check(tmp_path, hook_toml("https://receiver.example/hook", headers={
        "X-Auth-Token": "env:LEAKS_T", "X-Source": "streamd", "X-Tenant": "env:LEAKS_TENANT"}),
        env={"LEAKS_T": "header-secret-value", "LEAKS_TENANT": "tenant-value"})
    assert code == 0, err
    shown = json.loads(out.split("\n", 1)[1])["sinks"]["out"]["headers"]
    assert shown == {"X-Auth-Token": "<redacted env:LEAKS_T>", "X-Source": "streamd",
                     "X-Tenant": "<redacted env:LEAKS_TENANT>"}
    assert "header-secret-value" not in out + err and "tenant-value" not in out + err
