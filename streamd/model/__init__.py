"""The unified model: entities (`entities`) and the CloudEvents envelope (`envelope`)."""

from . import rules
from .entities import (
    ENTITIES,
    Address,
    BankAccount,
    Entity,
    Invoice,
    InvoiceLine,
    InvoiceRef,
    Link,
    Party,
    PartyRef,
    PaymentRef,
    Product,
    Record,
    TrafficLine,
    Transaction,
    entity_type,
)
from .envelope import (
    OPS,
    CloudEvent,
    Event,
    Op,
    cloudevent,
    content_version,
    dedupe_bucket,
    event_id,
    format_time,
    make_event,
    render_line,
)

__all__ = [
    "ENTITIES", "OPS", "Address", "BankAccount", "CloudEvent", "Entity", "Event", "Invoice",
    "InvoiceLine", "InvoiceRef", "Link", "Op", "Party", "PartyRef", "PaymentRef", "Product", "Record",
    "TrafficLine", "Transaction", "cloudevent", "content_version", "dedupe_bucket", "entity_type",
    "event_id", "format_time", "make_event", "render_line", "rules",
]
