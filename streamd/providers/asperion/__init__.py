"""`provider = "asperion"`: Asperion's REST API, polled per tenant, diffed into a change feed.

`wire` holds the wire format, `normalize` the pure mapping to the unified model,
`oauth` the authorization-code grant and rotating refresh tokens, `authorize` the
sign-in `streamd auth` runs, `source` the poller, and `simulator` an Asperion API +
identity server on loopback (for the demo, the tests and the benchmarks); `demo` its
part in `streamd demo`.
"""

from __future__ import annotations

from typing import Any

from ...sources import Authorization, DemoPart, DemoSetup, ProviderSpec, Source, SourceContext
from .config import AsperionConfig, validate


def _build(ctx: SourceContext, cfg: Any) -> Source:
    from .source import AsperionSource

    return AsperionSource(ctx, cfg)


async def _authorize(request: Authorization) -> None:
    from .authorize import authorize

    await authorize(request)


def _demo(setup: DemoSetup) -> DemoPart:
    from .demo import AsperionDemo

    return AsperionDemo(setup)


SPEC = ProviderSpec(config=AsperionConfig, build=_build, validate=validate, path_fields=("ca",),
                    keeps_credentials=True, demo=_demo, authorize=_authorize, holds_deletions=True)

__all__ = ["SPEC", "AsperionConfig"]
