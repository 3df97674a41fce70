"""`provider = "connec"`: Maestrano Connec!'s entity notifications and Maestrano's account
webhooks on the daemon's listener, and an optional changed-since poller of the
Connec! API v2.

`wire` holds the wire format, `normalize` the pure mapping to the unified model,
`source` the webhooks and the poller, and `simulator` a Connec! API and a sender of
its webhooks (for the demo, the tests and the benchmarks).
"""

from __future__ import annotations

from typing import Any

from ...sources import ProviderSpec, Source, SourceContext
from .config import ConnecConfig, validate


def _build(ctx: SourceContext, cfg: Any) -> Source:
    from .source import ConnecSource

    return ConnecSource(ctx, cfg)


SPEC = ProviderSpec(config=ConnecConfig, build=_build, validate=validate, path_fields=("ca",))

__all__ = ["SPEC", "ConnecConfig"]
