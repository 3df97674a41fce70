"""`provider = "asteria"`: the Asteria partner gateway (mTLS websocket + webhooks).

`wire` holds the wire format, `normalize` the pure mapping to the unified model,
`source` the daemon side, and `simulator` a gateway that speaks the same format
on loopback (for the demo, the tests and the benchmarks).
"""

from __future__ import annotations

from typing import Any

from ...sources import ProviderSpec, Source, SourceContext
from .config import AsteriaConfig, validate


def _build(ctx: SourceContext, cfg: Any) -> Source:
    from .source import AsteriaSource

    return AsteriaSource(ctx, cfg)


SPEC = ProviderSpec(config=AsteriaConfig, build=_build, validate=validate,
                    path_fields=("cert", "key", "ca"))

__all__ = ["SPEC", "AsteriaConfig"]
