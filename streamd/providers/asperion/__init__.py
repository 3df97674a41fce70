"""`provider = "asperion"`: Asperion's REST API, polled per tenant, diffed into a change feed.

`wire` holds the wire format, `normalize` the pure mapping to the unified model,
`oauth` the authorization-code grant and rotating refresh tokens, `source` the
poller, and `simulator` an Asperion API + identity server on loopback (for the
demo, the tests and the benchmarks); `demo` its part in `streamd demo`.
"""

from __future__ import annotations

from typing import Any

from ...sources import DemoPart, DemoSetup, ProviderSpec, Source, SourceContext
from .config import AsperionConfig, validate


def _build(ctx: SourceContext, cfg: Any) -> Source:
    from .source import AsperionSource

    return AsperionSource(ctx, cfg)


def _demo(setup: DemoSetup) -> DemoPart:
    from .demo import AsperionDemo

    return AsperionDemo(setup)


SPEC = ProviderSpec(config=AsperionConfig, build=_build, validate=validate, path_fields=("ca",),
                    keeps_credentials=True, demo=_demo)

__all__ = ["SPEC", "AsperionConfig"]
