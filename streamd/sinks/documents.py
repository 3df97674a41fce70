"""Which documents an ERP gets for an invoice's events: the lifecycle the SFTP sink
delivers (docs/sinks/sftp.md, "The documents"). Pure: an invoice's history and its next
event in, the documents to write out.

An accountant books a document once and corrects it only by another document that says
what it replaces. So:

- nothing goes while the invoice is not bookable (`BOOKABLE`: a draft may still change
  or be thrown away; `unknown` is a status streamd cannot read; `cancelled` before it
  ever went is nothing to book);
- the first bookable state goes as an `issue` (revision 1);
- a later change to what is booked (`content`: amounts, VAT, dates, the customer,
  lines, number, currency, kind) goes as a `correction` that supersedes the last
  document of the invoice; a change to anything else (its status within the bookable
  ones, HORISEN's own status, traffic reports, the customer's master data) goes not;
- cancelled (or deleted) after it went: a `cancellation` that supersedes it; bookable
  again after that: an `issue` that supersedes the cancellation;
- with `payments`, a change to what is paid (`paid_state`) goes as a `payment`
  document, which supersedes the previous payment document.

Every document of an invoice has the next revision (1, 2, 3, …, whatever its op) and a
`document_id` that is unique and the same however often it is decided again: the
event's id and the op. What was decided is remembered per invoice (`History`), an entry
per document, each with the seq of its event, so that a redelivered event is decided
the same way and `streamd sink reset` can take back what came after a seq.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Literal

import msgspec

from ..model import Invoice
from ..model.entities import given

Op = Literal["issue", "correction", "cancellation", "payment"]
DOCUMENT_OPS: tuple[Op, ...] = ("issue", "correction", "cancellation", "payment")

#: Unified statuses an ERP books. `draft`: not issued, may change or be thrown away;
#: `unknown`: a provider status streamd cannot read (it goes once it reads as one of
#: these); `cancelled`: nothing to book (or, after an issue, to cancel).
BOOKABLE = frozenset({"open", "partially_paid", "paid"})

#: Invoice fields that are not what an accountant books, and why a change to them is no
#: correction. Every other field is `content`.
NOT_CONTENT: dict[str, str] = {
    "status": "decides issue / cancellation; open, partially paid and paid are one booking",
    "provider_status": "the provider's own words for the status (approved, archived, ...)",
    "paid": "payment, not the claim: a `payment` document when `payments` is on",
    "unpaid": "payment, as `paid`",
    "paid_amount": "payment, as `paid`",
    "payments": "payment, as `paid`",
    "traffic": "the traffic reports detail what the lines bill; fetched once",
    "traffic_missing": "whether those reports came",
    "created_at": "when the provider stored it",
    "updated_at": "when the provider last touched it",
}
#: Party fields a correction is judged on: the customer is who `key` names; its name,
#: number, VAT number and address are its master data as it is when the document goes.
PARTY_CONTENT = ("key",)


@dataclass(frozen=True)
class Document:
    """One document decided for the ERP."""

    seq: int  # the event it came from
    revision: int
    op: Op
    document_id: str
    supersedes: str | None  # the document_id of the one it replaces
    content: str  # digest of what is booked, as this document shows it
    paid: str  # digest of what is paid, as this document shows it

    def entry(self) -> list[Any]:
        return [self.seq, self.revision, self.op, self.document_id, self.supersedes, self.content, self.paid]

    @classmethod
    def from_entry(cls, entry: list[Any]) -> Document:
        seq, revision, op, document_id, supersedes, content, paid = entry
        if op not in DOCUMENT_OPS:
            raise ValueError(f"no document op {op!r}")
        return cls(int(seq), int(revision), op, str(document_id), supersedes, str(content), str(paid))


@dataclass(frozen=True)
class History:
    """What went to the ERP for one invoice, and the last event taken for it."""

    seq: int = 0
    documents: tuple[Document, ...] = field(default=())

    def encode(self) -> bytes:
        return msgspec.json.encode([d.entry() for d in self.documents])

    @classmethod
    def decode(cls, seq: int, value: bytes) -> History:
        """Raises ValueError for what `encode` did not write."""
        try:
            entries = msgspec.json.decode(value, type=list[list[Any]])
            return cls(seq, tuple(Document.from_entry(e) for e in entries))
        except (msgspec.DecodeError, msgspec.ValidationError, TypeError) as exc:
            raise ValueError(str(exc)) from None

    def last(self, *ops: Op) -> Document | None:
        return next((d for d in reversed(self.documents) if d.op in ops), None)


def state_key(provider: str, tenant: str, key: str) -> str:
    """The invoice a history is of, as one string (JSON: no two invoices share one)."""
    return msgspec.json.encode([provider, tenant, key]).decode()


def decide(history: History, *, seq: int, event_id: str, invoice: Invoice,
           payments: bool) -> tuple[History, list[Document]]:
    """The invoice as event `seq` shows it (a deleted one: `status` cancelled), against what
    went before: the history after it, and the documents to write (none, one, or an issue
    or correction followed by a payment). An event the history already took (`seq` not
    after its `seq`: a dead letter retried after later events) is nothing."""
    if seq <= history.seq:
        return history, []
    docs: list[Document] = []
    revision = history.documents[-1].revision if history.documents else 0
    last = history.last("issue", "correction", "cancellation")
    content, paid = content_digest(invoice), paid_digest(invoice)

    def add(op: Op, supersedes: Document | None) -> None:
        nonlocal revision
        revision += 1
        docs.append(Document(seq, revision, op, f"{event_id}-{op}",
                             supersedes.document_id if supersedes else None, content, paid))

    if invoice.status in BOOKABLE:
        if last is None or last.op == "cancellation":
            add("issue", last)
        elif last.content != content:
            add("correction", last)
        if payments:
            last_payment = history.last("payment")
            if (last_payment.paid if last_payment else _NOTHING_PAID) != paid:
                add("payment", last_payment)
    elif invoice.status == "cancelled" and last is not None and last.op != "cancellation":
        add("cancellation", last)
    return replace(history, seq=seq, documents=history.documents + tuple(docs)), docs


# ---------------------------------------------------------------- digests

def _canonical(value: Any) -> Any:
    if isinstance(value, Decimal):
        return "0" if not value else format(value.normalize(), "f")
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


def _digest(value: Any) -> str:
    return hashlib.sha256(msgspec.json.encode(_canonical(value))).hexdigest()[:16]


def booked(invoice: Invoice) -> dict[str, Any]:
    """What an accountant books of an invoice (amounts by value: 10.0 is 10.00)."""
    tree: dict[str, Any] = msgspec.to_builtins(invoice, builtin_types=(Decimal,))
    for name in NOT_CONTENT:
        tree.pop(name, None)
    party = tree.get("party")
    if isinstance(party, dict):
        tree["party"] = {k: party.get(k) for k in PARTY_CONTENT}
    return tree


def content_digest(invoice: Invoice) -> str:
    return _digest(booked(invoice))


def paid_part(invoice: Invoice) -> Decimal | None:
    """What is paid: the provider's sum, else the total less what is unpaid."""
    paid = given(invoice.paid_amount)
    if paid is not None:
        return paid
    return invoice.total - invoice.unpaid if invoice.unpaid is not None else None


def paid_digest(invoice: Invoice) -> str:
    """What a payment document reports: the amount paid, whether in full, and when."""
    part = paid_part(invoice)
    in_full = invoice.status == "paid"
    if not in_full and not part:
        return _NOTHING_PAID
    return _digest([part, in_full, invoice.paid.isoformat() if invoice.paid else None])


_NOTHING_PAID = "-"
