"""The shipped systemd unit: systemd itself accepts it, its hardening scores at most 2.0
on `systemd-analyze security`, and it says what the daemon relies on (sd_notify, the
watchdog, exit 78, its state and config directories, credentials).

Needs `systemd-analyze` on PATH (systemd need not be running): without it these tests
skip, unless STREAMD_REQUIRE_TOOLS=1, which turns the skip into a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from streamd.config import DaemonConfig, HttpConfig
from streamd.errors import EX_CONFIG

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "streamd.service"
# Where docs/systemd.md installs streamd; it does not exist on a development machine.
INSTALLED = "/opt/streamd/bin/streamd"
MAX_EXPOSURE = 2.0


# ---------------------------------------------------------------- helpers


@pytest.fixture
def analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        if os.environ.get("STREAMD_REQUIRE_TOOLS") == "1":
            pytest.fail("systemd-analyze is not on PATH, and STREAMD_REQUIRE_TOOLS=1 requires it")
        pytest.skip("systemd-analyze is not on PATH (STREAMD_REQUIRE_TOOLS=1 makes this a failure)")
    return exe


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": "", "PAGER": "cat"}
    return subprocess.run(list(argv), capture_output=True, text=True, encoding="utf-8",
                          errors="replace", timeout=60, env=env)


def output(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}"


def directives(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment, in order. Unlike configparser this
    keeps repeated keys (SystemCallFilter= twice is meaningful) and joins lines ending
    in a backslash, as systemd does."""
    out: list[tuple[str, str, str]] = []
    section = ""
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not an assignment in [{section}]: {line!r}"
        out.append((section, key.strip(), value.strip()))
    return out


def values(section: str, key: str) -> list[str]:
    return [v for s, k, v in directives(UNIT.read_text()) if s == section and k == key]


def one(section: str, key: str) -> str:
    found = values(section, key)
    assert len(found) == 1, f"[{section}] {key}= is set {len(found)} times: {found}"
    return found[0]


def seconds(span: str) -> float:
    """The few systemd time spans this unit uses: 30s, 45s, 2min, 500ms."""
    m = re.fullmatch(r"(\d+)\s*(ms|s|sec|min|h)", span)
    assert m, f"unexpected time span {span!r}"
    scale = {"ms": 0.001, "s": 1.0, "sec": 1.0, "min": 60.0, "h": 3600.0}[m.group(2)]
    return int(m.group(1)) * scale


def runnable_streamd() -> str:
    """An ExecStart= command line for the streamd installed beside this interpreter."""
    beside = Path(sys.executable).parent / "streamd"
    if beside.is_file() and os.access(beside, os.X_OK):
        argv = [str(beside.absolute())]
    elif found := shutil.which("streamd"):
        argv = [str(Path(found).absolute())]
    else:
        argv = [sys.executable, "-m", "streamd"]
    return " ".join(f'"{a}"' if re.search(r"\s", a) else a for a in argv)


# ---------------------------------------------------------------- systemd accepts it


def test_verify_accepts_the_unit_with_a_real_binary(analyze: str, tmp_path: Path) -> None:
    """`systemd-analyze verify` checks that ExecStart's binary exists, and /opt/streamd
    does not here. So verify a copy whose only change is ExecStart pointing at the
    streamd this test suite runs; every other line is the shipped unit's."""
    shipped = UNIT.read_text()
    prefix = f"ExecStart={INSTALLED} "
    lines = shipped.splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if line.startswith(prefix)]
    assert len(hits) == 1, f"expected one line starting {prefix!r}, found {len(hits)}"
    lines[hits[0]] = lines[hits[0]].replace(INSTALLED, runnable_streamd(), 1)
    copy = tmp_path / "streamd.service"  # the unit's name comes from the file name
    copy.write_text("".join(lines))

    proc = run(analyze, "verify", str(copy))
    # verify exits 0 even for unknown keys or unparsable values, which it only logs:
    # any output at all is a problem with the unit.
    assert proc.returncode == 0, output(proc)
    assert proc.stdout.strip() == "" and proc.stderr.strip() == "", output(proc)


def test_verify_of_the_shipped_unit_complains_at_most_about_the_missing_binary(analyze: str) -> None:
    proc = run(analyze, "verify", str(UNIT))
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    if Path(INSTALLED).is_file() and os.access(INSTALLED, os.X_OK):
        assert proc.returncode == 0 and lines == [], output(proc)
    else:
        assert [line for line in lines if INSTALLED not in line] == [], output(proc)


def test_security_exposure_is_at_most_2(analyze: str) -> None:
    proc = run(analyze, "security", "--offline=true", "--no-pager", str(UNIT))
    assert proc.returncode == 0, output(proc)
    last = [line for line in proc.stdout.splitlines() if line.strip()][-1]
    m = re.search(r"Overall exposure level for streamd\.service: (\d+(?:\.\d+)?)\b", last)
    assert m, f"no overall exposure on the last line: {last!r}\n{output(proc)}"
    exposure = float(m.group(1))
    assert exposure <= MAX_EXPOSURE, f"exposure {exposure} > {MAX_EXPOSURE}\n{proc.stdout}"


# ---------------------------------------------------------------- what the daemon relies on


def test_unit_parses_into_known_sections() -> None:
    sections = {s for s, _, _ in directives(UNIT.read_text())}
    assert sections == {"Unit", "Service", "Install"}


def test_unit_runs_the_venv_install_with_notify_and_watchdog() -> None:
    assert one("Service", "ExecStart") == f"{INSTALLED} run"
    assert one("Service", "Type") == "notify"
    assert one("Service", "NotifyAccess") == "main"
    watchdog = seconds(one("Service", "WatchdogSec"))
    # streamd pings at half of $WATCHDOG_USEC and checks every second at most.
    assert watchdog >= 10, watchdog
    assert one("Install", "WantedBy") == "multi-user.target"
    assert "network-online.target" in one("Unit", "After").split()
    assert "network-online.target" in one("Unit", "Wants").split()


def test_refused_config_is_not_restarted() -> None:
    assert one("Service", "Restart") == "on-failure"
    assert str(EX_CONFIG) in one("Service", "RestartPreventExitStatus").split()


def test_stop_timeout_leaves_room_for_the_default_drain() -> None:
    drain = DaemonConfig().shutdown_timeout.seconds
    assert seconds(one("Service", "TimeoutStopSec")) > drain


def test_open_files_and_memory_leave_room_for_the_listener() -> None:
    """The listener's default caps fit under LimitNOFILE= with streamd's reserve, and
    memory is bounded well above what streamd uses (a kill there loses nothing)."""
    from streamd.listener import FD_RESERVE

    assert int(one("Service", "LimitNOFILE")) >= HttpConfig().max_connections + FD_RESERVE
    assert one("Service", "MemoryMax") == "1G" and one("Service", "MemoryHigh") == "512M"


def test_state_config_and_user() -> None:
    assert one("Service", "StateDirectory") == "streamd"
    assert one("Service", "ConfigurationDirectory") == "streamd"
    assert one("Service", "DynamicUser") == "yes"
    assert one("Service", "ProtectSystem") == "strict"
    # sd_notify is an AF_UNIX datagram; everything else is TCP.
    assert one("Service", "RestrictAddressFamilies").split() == ["AF_UNIX", "AF_INET", "AF_INET6"]


def test_credentials_are_shown_as_commented_examples() -> None:
    """LoadCredential= needs its source file to exist at start, so the shipped unit
    only shows it; each example names a plain credential, as `credential:NAME` needs."""
    examples = re.findall(r"^#\s*(LoadCredential(?:Encrypted)?)=([^:\s]+):(/\S+)\s*$",
                          UNIT.read_text(), flags=re.M)
    assert any(kind == "LoadCredential" for kind, _, _ in examples), examples
    for _, name, _ in examples:
        assert "/" not in name and name not in (".", ".."), name
    assert values("Service", "LoadCredential") == []
    assert values("Service", "LoadCredentialEncrypted") == []
