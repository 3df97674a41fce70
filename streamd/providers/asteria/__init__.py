"""`provider = "asteria"`: the Asteria partner gateway (mTLS websocket + webhooks).

`wire` holds the wire format, `normalize` the pure mapping to the unified model,
`source` the daemon side, and `simulator` a gateway that speaks the same format
on loopback (for the demo, the tests and the benchmarks); `demo` its part in
`streamd demo`.
"""

from __future__ import annotations

from typing import Any

from ...sources import DemoPart, DemoSetup, ProviderSpec, Source, SourceContext
from .config import AsteriaConfig, validate


def _build(ctx: SourceContext, cfg: Any) -> Source:
    from .source import AsteriaSource

    return AsteriaSource(ctx, cfg)


def _demo(setup: DemoSetup) -> DemoPart:
    from .demo import AsteriaDemo

    return AsteriaDemo(setup)


SPEC = ProviderSpec(config=AsteriaConfig, build=_build, validate=validate,
                    path_fields=("cert", "key", "ca"), demo=_demo)

__all__ = ["SPEC", "AsteriaConfig"]
