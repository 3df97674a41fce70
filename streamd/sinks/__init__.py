"""Sink kinds, by the `type` of a `[sinks.<name>]` table. Each module exposes `SPEC`."""

from __future__ import annotations

import importlib

from .base import Sink, SinkSpec

SINKS: dict[str, str] = {
    "stdout": "streamd.sinks.stdout",
    "file": "streamd.sinks.file",
    "sftp": "streamd.sinks.sftp",
    "http": "streamd.sinks.http",
    "postgres": "streamd.sinks.postgres",
    "nats": "streamd.sinks.nats",
}


def sink_spec(kind: str) -> SinkSpec:
    spec = importlib.import_module(SINKS[kind]).SPEC
    assert isinstance(spec, SinkSpec)
    return spec


__all__ = ["SINKS", "Sink", "SinkSpec", "sink_spec"]
