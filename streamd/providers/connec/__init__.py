"""`provider = "connec"`: Maestrano Connec!'s entity notifications and Maestrano's account
webhooks on the daemon's listener, and an optional changed-since poller of the
Connec! API v2.

`wire` holds the wire format, `normalize` the pure mapping to the unified model,
`source` the webhooks and the poller, and `simulator` a Connec! API and a sender of
its webhooks (for the demo, the tests and the benchmarks); `demo` its part in
`streamd demo`.
"""

from __future__ import annotations

from typing import Any

from ...sources import DemoPart, DemoSetup, ProviderSpec, Source, SourceContext
from .config import ConnecConfig, validate


def _build(ctx: SourceContext, cfg: Any) -> Source:
    from .source import ConnecSource

    return ConnecSource(ctx, cfg)


def _demo(setup: DemoSetup) -> DemoPart:
    from .demo import ConnecDemo

    return ConnecDemo(setup)


SPEC = ProviderSpec(config=ConnecConfig, build=_build, validate=validate, path_fields=("ca",), demo=_demo)

__all__ = ["SPEC", "ConnecConfig"]
