"""`type = "postgres"`: the feed and the current state of every entity, in PostgreSQL,
each event applied exactly once (docs/sinks/postgres.md).

This package is the config and its checks (`config`); the sink itself (`sink`, which
imports the driver, asyncpg) and its tables (`schema`) load only when a postgres sink
is built, so a daemon without one never imports them.

The DSN names where and who (`postgresql://user@host:5432/db`); the password is never in
it but a secret reference (`password`) or a libpq password file (`passfile`), and TLS is
the sink's own keys (`sslmode`, `ca`), not DSN parameters, so that `streamd check` can
say what the connection will do. Nothing comes from the environment (PGPASSWORD, PGSSLMODE,
~/.pgpass) for the password or TLS: a daemon's connection is what its config says.
"""

from __future__ import annotations

from typing import Any

from ..base import Sink, SinkSpec
from .config import PostgresSinkConfig, validate, warnings


def _build(name: str, cfg: Any) -> Sink:
    from .sink import PostgresSink

    return PostgresSink(name, cfg)


SPEC = SinkSpec(config=PostgresSinkConfig, build=_build, validate=validate, warnings=warnings,
                path_fields=("ca", "passfile"))

__all__ = ["SPEC", "PostgresSinkConfig"]
