"""`provider = "synthetic"`: streamd's own deterministic source, for the demo and the drills."""

from __future__ import annotations

from ...sources import ProviderSpec, SourceContext
from .config import SyntheticConfig, validate


def _build(ctx: SourceContext, cfg: SyntheticConfig) -> object:
    from .source import SyntheticSource

    return SyntheticSource(ctx, cfg)


SPEC = ProviderSpec(config=SyntheticConfig, build=_build, validate=validate)  # type: ignore[arg-type]

__all__ = ["SPEC", "SyntheticConfig"]
