"""A real PostgreSQL on loopback, for the postgres sink's tests and drills.

The server binaries are Debian's (`/usr/lib/postgresql/<version>/bin`, the newest; or
$STREAMD_PG_BINDIR; or `initdb` on PATH). Where there are none the tests skip, unless
STREAMD_REQUIRE_TOOLS=1, which makes that a failure (`.ci/run` installs `postgresql`).

Each server is its own cluster in a temporary directory, listening on a free port of
127.0.0.1 only (no unix socket). PostgreSQL refuses to run as root, so as root (CI) the
server runs as the `postgres` user (`runuser`), its directory given to that user;
otherwise as whoever runs the tests. `initdb` runs once per session into a template,
copied for each server (a copy and a start take about 0.3 s). Logins are by password
(scram-sha-256) over TCP: the superuser `postgres` for the tests' own queries, and
`streamd` (owner of the database `feed`) for the sink. TLS is on, with a certificate
for 127.0.0.1 and localhost from a throwaway CA (`ca_file`); `fsync = off`, as nothing
here outlives the machine (a crash of the server, `-m immediate`, still recovers).

    template = Template(require_bindir())              # once per session (a fixture)
    server = template.server(tmp_path / "pg")          # started
    server.sink_toml("out", schema="s1")              # a [sinks.out] table for it
    server.rows("SELECT count(*) AS n FROM s1.events")  # [{"n": 0}], via psql
    server.stop("immediate"); server.start()          # down hard, and back on the same port
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import trustme

from .ports import free_port

ADMIN_PASSWORD = "admin-password-for-tests"
PASSWORD = "streamd-password-for-tests"
USER = "streamd"
DATABASE = "feed"


def bindir() -> Path | None:
    """Where initdb, pg_ctl and psql are, or None."""
    forced = os.environ.get("STREAMD_PG_BINDIR")
    if forced:
        return Path(forced)
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                      key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if versions:
        return versions[-1].parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def require_bindir() -> Path:
    found = bindir()
    if found is None or not (found / "pg_ctl").exists():
        if os.environ.get("STREAMD_REQUIRE_TOOLS") == "1":
            pytest.fail("PostgreSQL's server binaries are not installed (Debian: apt-get install "
                        "postgresql), and STREAMD_REQUIRE_TOOLS=1 requires them")
        pytest.skip("PostgreSQL's server binaries are not installed (STREAMD_REQUIRE_TOOLS=1 makes "
                    "this a failure)")
    return found


def _server_user() -> str | None:
    """The user the server runs as when we are root: postgres, else nobody."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    pytest.fail("running as root, and neither a postgres nor a nobody user exists to run the server")


class Template:
    """One initdb'd cluster (roles, database, TLS, config), copied for each server."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.user = _server_user()
        self.root = Path(tempfile.mkdtemp(prefix="streamd-pg-template-"))
        self.ca = trustme.CA()
        self.data = self.root / "data"
        self._own(self.root)
        pw = self.root / "pw"
        pw.write_text(ADMIN_PASSWORD)
        self._own(pw)
        self.as_server([str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-E", "UTF8",
                        "--locale=C.UTF-8", "--auth-host=scram-sha-256", "--auth-local=reject",
                        f"--pwfile={pw}", "--no-sync"])
        pw.unlink()
        cert = self.ca.issue_cert("127.0.0.1", "localhost")
        cert.private_key_pem.write_to_path(str(self.data / "server.key"))
        cert.cert_chain_pems[0].write_to_path(str(self.data / "server.crt"))
        os.chmod(self.data / "server.key", 0o600)
        (self.data / "pg_hba.conf").write_text("host all all 127.0.0.1/32 scram-sha-256\n")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("\n# tests/postgres_server.py\nlisten_addresses = '127.0.0.1'\n"
                       "unix_socket_directories = ''\nssl = on\nssl_cert_file = 'server.crt'\n"
                       "ssl_key_file = 'server.key'\nfsync = off\nshared_buffers = 32MB\n"
                       "max_connections = 40\nlog_min_messages = warning\n")
        for f in ("server.key", "server.crt", "pg_hba.conf", "postgresql.conf"):
            self._own(self.data / f)
        # The roles and the database, once: every copy has them.
        server = PostgresServer(self, self.root / "setup", data=self.data)
        server.start()
        try:
            server.execute(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'", "postgres")
            server.execute(f"CREATE DATABASE {DATABASE} OWNER {USER}", "postgres")
        finally:
            server.stop("fast")

    def _own(self, path: Path) -> None:
        if self.user is not None:
            shutil.chown(path, self.user, self.user if _has_group(self.user) else None)

    def as_server(self, cmd: list[str], *, check: bool = True,
                  timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a command as the server's user."""
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "LC_ALL": "C.UTF-8"})
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
        return done

    def server(self, workdir: Path, *, start: bool = True) -> PostgresServer:
        """A new cluster from the template (its own copy, port and CA file)."""
        root = Path(tempfile.mkdtemp(prefix="streamd-pg-"))
        self._own(root)
        data = root / "data"
        self.as_server(["cp", "-a", str(self.data), str(data)])
        server = PostgresServer(self, workdir, data=data, root=root)
        if start:
            server.start()
        return server

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _has_group(user: str) -> bool:
    import grp

    try:
        grp.getgrnam(user)
        return True
    except KeyError:
        return False


class PostgresServer:
    host = "127.0.0.1"

    def __init__(self, template: Template, workdir: Path, *, data: Path, root: Path | None = None) -> None:
        self.t = template
        self.data = data
        self.root = root  # removed on close (None: the template's own data directory)
        self.port = free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.ca_file = workdir / "ca.pem"
        template.ca.cert_pem.write_to_path(str(self.ca_file))
        self.log = (root or template.root) / f"server-{self.port}.log"
        self.running = False

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        assert not self.running
        self.t.as_server([str(self.t.bin / "pg_ctl"), "start", "-D", str(self.data), "-l", str(self.log),
                          "-w", "-t", "60", "-o", f"-p {self.port}"])
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """`pg_ctl stop -m fast` (clean) or `-m immediate` (a crash: recovery at the next start)."""
        if self.running:
            self.t.as_server([str(self.t.bin / "pg_ctl"), "stop", "-D", str(self.data), "-m", mode,
                              "-w", "-t", "60"])
            self.running = False

    def close(self) -> None:
        try:
            self.stop("immediate")
        finally:
            if self.root is not None:
                shutil.rmtree(self.root, ignore_errors=True)

    def server_log(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    # ------------------------------------------------------------ for the tests

    def dsn(self, user: str = USER, database: str = DATABASE, host: str | None = None) -> str:
        return f"postgresql://{user}@{host or self.host}:{self.port}/{database}"

    def sink_fields(self, **extra: Any) -> dict[str, Any]:
        fields: dict[str, Any] = {"type": "postgres", "dsn": self.dsn(),
                                  "password": "env:STREAMD_TEST_PG_PASSWORD", "sslmode": "disable"}
        fields.update(extra)
        return {k: v for k, v in fields.items() if v is not None}

    def sink_toml(self, name: str, **extra: Any) -> str:
        """A `[sinks.<name>]` table for this server (password from $STREAMD_TEST_PG_PASSWORD,
        which `env()` sets); `extra` adds or overrides keys (None drops one)."""
        lines = [f"[sinks.{name}]"]
        lines += [f"{k} = {_toml(v)}" for k, v in self.sink_fields(**extra).items()]
        return "\n".join(lines) + "\n"

    @staticmethod
    def env() -> dict[str, str]:
        return {"STREAMD_TEST_PG_PASSWORD": PASSWORD}

    def _psql(self, sql: str, database: str) -> str:
        cmd = [str(self.t.bin / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
               "-h", self.host, "-p", str(self.port), "-U", "postgres", "-d", database, "-c", sql]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PGPASSWORD": ADMIN_PASSWORD, "PGSSLMODE": "disable",
                                   "PGCONNECT_TIMEOUT": "10"})
        if done.returncode != 0:
            raise PsqlError(done.stderr.strip())
        return done.stdout

    def execute(self, sql: str, database: str = DATABASE) -> None:
        """Run statements as the superuser."""
        self._psql(sql, database)

    def rows(self, sql: str, database: str = DATABASE) -> list[dict[str, Any]]:
        """A query's rows as dicts (JSON through psql: jsonb columns come back parsed)."""
        out = self._psql(f"SELECT coalesce(json_agg(t), '[]'::json) FROM ({sql}) t", database)
        result: list[dict[str, Any]] = json.loads(out)
        return result

    def value(self, sql: str, database: str = DATABASE) -> Any:
        rows = self.rows(sql, database)
        return next(iter(rows[0].values())) if rows else None


class PsqlError(Exception):
    pass


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(value)
