"""`provider = "horisen"`: HORISEN's finance documents (customer invoices) and their traffic
reports, polled with OAuth2 client credentials into a change feed.

`wire` holds the wire format, `normalize` the pure mapping to the unified model,
`changes` the events a listing emits (every change to a document, less named noise),
`payments` how a payment is seen whichever stamp HORISEN moves, `oauth` the
client-credentials token, `source` the poller, `listing` one poll's diff and
`progress` (pure) where its cursor moves, `simulator` (with `records`) a HORISEN API on
loopback (for the demo, the tests and the benchmarks), and `demo` its part in
`streamd demo`. The seed's delivery step (XML over SFTP) is the `sftp` sink.
"""

from __future__ import annotations

from typing import Any

from ...sources import DemoPart, DemoSetup, ProviderSpec, Source, SourceContext
from .config import HorisenConfig, validate


def _build(ctx: SourceContext, cfg: Any) -> Source:
    from .source import HorisenSource

    return HorisenSource(ctx, cfg)


def _demo(setup: DemoSetup) -> DemoPart:
    from .demo import HorisenDemo

    return HorisenDemo(setup)


SPEC = ProviderSpec(config=HorisenConfig, build=_build, validate=validate, path_fields=("ca",), demo=_demo)

__all__ = ["SPEC", "HorisenConfig"]
