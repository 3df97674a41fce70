"""Config: refused whole, before anything starts, with the key's path; secrets only by reference."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import pytest

from streamd.configfile import parse, render
from streamd.errors import EX_CONFIG, ConfigError, SecretError
from streamd.secrets import Secret
from streamd.units import Duration, Size

from .conftest import streamd_cli

ROOT = Path(__file__).resolve().parent.parent


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return info.value.problems


def test_durations_and_sizes_parse_their_units() -> None:
    assert Duration.parse("500ms").seconds == 0.5
    assert Duration.parse("5m").seconds == 300
    assert Duration.parse("30d").seconds == 30 * 86400
    assert Duration.parse(2).seconds == 2
    assert str(Duration.parse("90s")) == "90s" and str(Duration.parse("1.5s")) == "1500ms"
    assert Size.parse("100MiB").bytes == 100 * 2**20
    assert Size.parse("1KB").bytes == 1000
    assert Size.parse(4096).bytes == 4096
    assert str(Size.parse(2**20)) == "1MiB"
    for bad in ("5 parsecs", "", "-1s"):
        with pytest.raises(ValueError):
            Duration.parse(bad)
    with pytest.raises(TypeError):
        Size.parse(True)


def test_the_shipped_config_toml_is_accepted() -> None:
    cfg = parse((ROOT / "config.toml").read_text(), base_dir=ROOT)
    assert cfg.store.synchronous == "full"
    assert cfg.sources and cfg.sinks


def test_wrong_type_names_the_key_path() -> None:
    text = '[sinks.feed]\ntype = "file"\npath = "f.jsonl"\nkeep = "five"\n'
    assert problems(text) == ["sinks.feed.keep: expected int, got str"]


def test_bad_size_and_duration_name_the_key_path() -> None:
    text = ('[store]\nretention = "forever"\n[sinks.feed]\ntype = "file"\npath = "f"\n'
            'rotate_bytes = true\n')
    found = problems(text)
    assert any(p.startswith("store.retention: invalid duration 'forever'") for p in found)
    text = '[sinks.feed]\ntype = "file"\npath = "f"\nrotate_bytes = true\n'
    assert problems(text) == ['sinks.feed.rotate_bytes: expected a size like 1048576 or "100MiB", got bool']


def test_unknown_keys_are_refused_with_their_path() -> None:
    assert problems('[store]\npaht = "x.db"\n') == ["store.paht: unknown key"]
    assert problems('[sinks.out]\ntype = "stdout"\nmatch = {provder = ["x"]}\n') == [
        "sinks.out.match.provder: unknown key"]
    assert problems('[sources.s]\nprovider = "synthetic"\nrat = 5\n') == ["sources.s.rat: unknown key"]
    assert problems("[nonsense]\n") == ["nonsense: unknown key"]


def test_missing_values_and_unknown_kinds_are_refused() -> None:
    assert problems('[sinks.feed]\ntype = "file"\n') == ["sinks.feed.path: missing required key"]
    assert problems('[sinks.x]\npath = "a"\n')[0].startswith("sinks.x.type: missing required key")
    assert problems('[sinks.x]\ntype = "carrier-pigeon"\n')[0].startswith(
        "sinks.x.type: unknown sink type 'carrier-pigeon'")
    assert problems('[sources.x]\nprovider = "nope"\n')[0].startswith(
        "sources.x.provider: unknown provider 'nope'")


def test_every_problem_is_reported_at_once() -> None:
    text = ('[http]\nlisten = "nowhere"\n[sinks.a]\ntype = "file"\n'
            '[sinks.b]\ntype = "stdout"\nmatch = {type = ["invoice"], provider = ["asteira"]}\n')
    found = problems(text)
    assert "http.listen: expected \"host:port\", got 'nowhere'" in found
    assert "sinks.a.path: missing required key" in found
    assert any(p.startswith("sinks.b.match.type: 'invoice' is not") for p in found)
    assert any(p.startswith("sinks.b.match.provider: unknown provider 'asteira'") for p in found)


def test_a_pollers_requests_in_flight_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("P_SECRET", "s")
    for provider, keys in (("horisen", 'token_url = "https://accounts.example.com/oauth2/access-token"\n'
                                       'api_url = "https://api.example.com"\n'),
                           ("asperion", 'redirect_uri = "http://127.0.0.1:8976/callback"\n')):
        keys += 'client_id = "c"\nclient_secret = "env:P_SECRET"\n'
        assert parse(f'[sources.p]\nprovider = "{provider}"\n{keys}concurrency = 64\n').sources["p"]
        for bad in (0, 65, 16000):
            found = problems(f'[sources.p]\nprovider = "{provider}"\n{keys}concurrency = {bad}\n')
            assert "sources.p.concurrency: must be between 1 and 64" in found, (provider, bad, found)


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    cfg = parse('[store]\npath = "state/feed.db"\n[sinks.f]\ntype = "file"\npath = "out.jsonl"\n',
                base_dir=tmp_path)
    assert cfg.store.path == str(tmp_path / "state" / "feed.db")
    assert cfg.sinks["f"].path == str(tmp_path / "out.jsonl")  # type: ignore[attr-defined]


# ---------------------------------------------------------------- secrets

def test_each_secret_form_resolves(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-a-file\n")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "hook").write_text("from-a-credential")
    env = {"HOOK_TOKEN": "from-env", "CREDENTIALS_DIRECTORY": str(creds)}
    assert Secret.resolve("env:HOOK_TOKEN", env).reveal() == "from-env"
    assert Secret.resolve(f"file:{tmp_path / 'token'}", env).reveal() == "from-a-file"
    assert Secret.resolve("credential:hook", env).reveal() == "from-a-credential"


def test_secret_errors_name_what_is_missing_never_a_value(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="environment variable NOPE is not set"):
        Secret.resolve("env:NOPE", {})
    with pytest.raises(SecretError, match="does not exist"):
        Secret.resolve(f"file:{tmp_path / 'absent'}", {})
    with pytest.raises(SecretError, match=r"needs \$CREDENTIALS_DIRECTORY"):
        Secret.resolve("credential:hook", {})
    with pytest.raises(SecretError) as info:
        Secret.resolve("hunter2-inline-password", {})
    assert "hunter2" not in str(info.value) and "inline" in str(info.value)


def test_a_secret_prints_as_its_reference_only() -> None:
    s = Secret.resolve("env:T", {"T": "s3cr3t-value"})
    assert "s3cr3t" not in repr(s) and "s3cr3t" not in str(s) and "s3cr3t" not in f"{s!r} {s}"


def test_missing_secret_in_config_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMD_TEST_NOPE", raising=False)
    text = '[sources.s]\nprovider = "synthetic"\nwebhook = true\ntoken = "env:STREAMD_TEST_NOPE"\n'
    assert problems(text) == ["sources.s.token: environment variable STREAMD_TEST_NOPE is not set"]
    text = '[sources.s]\nprovider = "synthetic"\nwebhook = true\ntoken = "letmein-inline"\n'
    (problem,) = problems(text)
    assert problem.startswith("sources.s.token: secrets cannot be written inline")
    assert "letmein" not in problem


def test_render_redacts_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMD_TEST_TOKEN", "very-secret-token")
    cfg = parse('[sources.s]\nprovider = "synthetic"\nwebhook = true\ntoken = "env:STREAMD_TEST_TOKEN"\n')
    out = render(cfg)
    assert "very-secret-token" not in out
    assert "<redacted env:STREAMD_TEST_TOKEN>" in out


# ---------------------------------------------------------------- the CLI, as a process

def test_check_exits_78_with_the_key_path_and_runs_nothing(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[store]\npath = "feed.db"\n[sinks.feed]\ntype = "file"\npath = "f"\nkeep = "five"\n')
    for command in ("check", "run"):
        r = streamd_cli(command, "-c", str(cfg))
        assert r.returncode == EX_CONFIG, r.stderr
        assert "sinks.feed.keep: expected int, got str" in r.stderr
    assert not (tmp_path / "feed.db").exists(), "a refused config must not touch the store"


def test_check_prints_the_resolved_config_with_secrets_redacted(tmp_path: Path) -> None:
    (tmp_path / "tok").write_text("file-secret-value")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "c").write_text("credential-secret-value")
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[sources.a]\nprovider = "synthetic"\nwebhook = true\ntoken = "env:STREAMD_T1"\n'
        f'[sources.b]\nprovider = "synthetic"\nwebhook = true\ntoken = "file:{tmp_path / "tok"}"\n'
        '[sources.c]\nprovider = "synthetic"\nwebhook = true\ntoken = "credential:c"\n')
    env = {"STREAMD_T1": "env-secret-value", "CREDENTIALS_DIRECTORY": str(creds)}
    r = streamd_cli("check", "-c", str(cfg), env=env)
    assert r.returncode == 0, r.stderr
    assert "ok (3 sources, 0 sinks)" in r.stdout
    for value in ("env-secret-value", "file-secret-value", "credential-secret-value"):
        assert value not in r.stdout + r.stderr
    assert "<redacted env:STREAMD_T1>" in r.stdout and "<redacted credential:c>" in r.stdout


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    r = streamd_cli("check", "-c", str(tmp_path / "absent.toml"),
                    env={k: v for k, v in os.environ.items() if k != "STREAMD_CONFIG"})
    assert r.returncode == EX_CONFIG
    assert "config file does not exist" in r.stderr


def test_backoff_needs_a_pause_and_a_sane_cap() -> None:
    text = ('[sources.s]\nprovider = "synthetic"\nbackoff = { min = "0s", max = "1m" }\n'
            '[sinks.o]\ntype = "stdout"\nbackoff = { min = "10s", max = "1s" }\n')
    found = problems(text)
    assert "sources.s.backoff.min: must be at least 1ms (a retry loop needs a pause)" in found
    assert "sinks.o.backoff.max: must not be less than backoff.min" in found


def test_a_mistake_in_one_section_does_not_hide_the_others() -> None:
    text = '[store]\nsynchronous = "sometimes"\n[http]\nbody_limit = "huge"\n[daemon]\nlog_level = "loud"\n'
    found = problems(text)
    assert [p.split(":")[0] for p in found] == ["store.synchronous", "http.body_limit", "daemon.log_level"]


def test_a_relative_file_secret_is_relative_to_the_config_file(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "hook").write_text("relative-secret")
    monkeypatch.chdir("/")
    cfg = parse('[sources.s]\nprovider = "synthetic"\nwebhook = true\ntoken = "file:secrets/hook"\n',
                base_dir=tmp_path)
    assert cfg.sources["s"].token.reveal() == "relative-secret"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("header", "seconds"), [
    ("2", 2.0), (" 120 ", 120.0), ("Sat, 21 Nov 2026 12:00:30 GMT", 30.0),
    ("Sat, 21 Nov 2026 11:59:00 GMT", 0.0), ("soon", None), ("", None), (None, None),
])
def test_retry_after_takes_seconds_or_an_http_date(header: str | None, seconds: float | None) -> None:
    from datetime import UTC, datetime

    from streamd.retry import retry_after_seconds

    now = datetime(2026, 11, 21, 12, 0, tzinfo=UTC).timestamp()
    assert retry_after_seconds(header, now=now) == seconds


# ---------------------------------------------------------------- issue 14: the business time zone

def test_each_provider_has_a_documented_business_time_zone_and_a_source_may_set_its_own() -> None:
    from streamd.providers import provider_spec

    defaults = {name: next(f.default for f in msgspec.structs.fields(provider_spec(name).config)
                           if f.name == "timezone")
                for name in ("asteria", "asperion", "horisen", "connec", "synthetic")}
    assert defaults == {"asteria": "Europe/Stockholm", "asperion": "Europe/Amsterdam",
                        "horisen": "Europe/Zurich", "connec": "UTC", "synthetic": "UTC"}
    cfg = parse('[sources.s]\nprovider = "synthetic"\ntimezone = "America/New_York"\n')
    assert cfg.sources["s"].zone.key == "America/New_York"


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "", "../../etc/passwd", "Europe"])
def test_a_timezone_that_is_not_in_the_iana_database_is_refused(zone: str) -> None:
    assert problems(f'[sources.s]\nprovider = "synthetic"\ntimezone = "{zone}"\n') == [
        f'sources.s.timezone: {zone!r} is not a time zone of the IANA database '
        '(e.g. "Europe/Stockholm", "UTC")']
