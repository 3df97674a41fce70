"""The seat a provider plugs into: `SourceContext`, `Source`, `ProviderSpec` (see `base`)."""

from .base import (
    Authorization,
    DemoPart,
    DemoSetup,
    ProviderSpec,
    Routes,
    Simulated,
    Source,
    SourceContext,
    WebhookAuth,
    WebhookHandler,
    WebhookReply,
    WebhookRequest,
    json_reply,
)

__all__ = [
    "Authorization", "DemoPart", "DemoSetup", "ProviderSpec", "Routes", "Simulated", "Source",
    "SourceContext", "WebhookAuth", "WebhookHandler", "WebhookReply", "WebhookRequest", "json_reply",
]
