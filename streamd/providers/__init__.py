"""Providers, by the `provider` of a `[sources.<name>]` table. Each package exposes `SPEC`.

`synthetic` is streamd's own: a deterministic generator of finance events (and a
webhook that takes the same records) for the demo, benchmarks and drills.
"""

from __future__ import annotations

import importlib

from ..sources.base import ProviderSpec

PROVIDERS: dict[str, str] = {
    "asperion": "streamd.providers.asperion",
    "asteria": "streamd.providers.asteria",
    "connec": "streamd.providers.connec",
    "horisen": "streamd.providers.horisen",
    "synthetic": "streamd.providers.synthetic",
}


def provider_spec(name: str) -> ProviderSpec:
    spec = importlib.import_module(PROVIDERS[name]).SPEC
    assert isinstance(spec, ProviderSpec)
    return spec


__all__ = ["PROVIDERS", "ProviderSpec", "provider_spec"]
