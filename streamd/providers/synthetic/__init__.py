"""`provider = "synthetic"`: streamd's own deterministic source, for the demo and the drills."""

from __future__ import annotations

from typing import Any

from ...sources import ProviderSpec, Source, SourceContext
from .config import SyntheticConfig, validate


def _build(ctx: SourceContext, cfg: Any) -> Source:
    from .source import SyntheticSource

    return SyntheticSource(ctx, cfg)


SPEC = ProviderSpec(config=SyntheticConfig, build=_build, validate=validate)

__all__ = ["SPEC", "SyntheticConfig"]
