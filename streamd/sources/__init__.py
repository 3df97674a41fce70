"""The seat a provider plugs into: `SourceContext`, `Source`, `ProviderSpec` (see `base`)."""

from .base import (
    DemoPart,
    DemoSetup,
    ProviderSpec,
    Routes,
    Source,
    SourceContext,
    WebhookAuth,
    WebhookHandler,
    WebhookReply,
    WebhookRequest,
    json_reply,
)

__all__ = [
    "DemoPart", "DemoSetup", "ProviderSpec", "Routes", "Source", "SourceContext", "WebhookAuth",
    "WebhookHandler", "WebhookReply", "WebhookRequest", "json_reply",
]
