"""One rule for an invoice's kind and status, whichever provider it came from. Every
normalizer builds its `Invoice` from the provider's own words (its document type, its
status table) and passes it through `unified`; docs/model.md ("Kinds and statuses")
states the rules for consumers. Pure.

- **Credit notes.** `kind` is the provider's document type where it has one (Asteria
  `CREDIT`, `ORDER`); and an `invoice` whose `total` is below zero is a `credit_note`,
  whatever the provider files it as: Asperion and HORISEN have no document type, and
  Connec! and Asteria (`type: "invoice"`) carry a credit as a negative invoice. Amounts
  keep the provider's sign: a credit note from a type may be positive.
- **Partial payment.** An `open` invoice of which some, not all, is paid is
  `partially_paid`: `unpaid` strictly between 0 and `total` (same sign), or, where the
  provider gives no `unpaid`, payments in the invoice's currency that add up to less than
  the total. Nothing else is inferred: an invoice is `paid` only when the provider says
  so, and `unpaid` is never computed (it is what the provider sent, or null).
"""

from __future__ import annotations

from decimal import Decimal, localcontext

import msgspec

from .entities import Invoice, InvoiceKind, InvoiceStatus, PaymentRef

#: Wide enough that a sum of payments is exact: each has at most 38 + 38 digits.
_PRECISION = 200


def kind(declared: InvoiceKind, total: Decimal) -> InvoiceKind:
    return "credit_note" if declared == "invoice" and total < 0 else declared


def _paid_so_far(invoice: Invoice) -> Decimal | None:
    """What is paid: total − unpaid when the provider says what is unpaid, else the sum of
    the payments in the invoice's currency (None when there is neither)."""
    if invoice.unpaid is not None:
        return None  # compared directly in `status`, without arithmetic
    payments: list[PaymentRef] = invoice.payments
    if not payments or any(p.currency not in (None, invoice.currency) for p in payments):
        return None
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        return sum((p.amount for p in payments), Decimal(0))


def status(invoice: Invoice) -> InvoiceStatus:
    if invoice.status != "open" or not invoice.total:
        return invoice.status
    total, unpaid = invoice.total, invoice.unpaid
    if unpaid is not None:
        partial = 0 < unpaid < total if total > 0 else total < unpaid < 0
    else:
        paid = _paid_so_far(invoice)
        partial = paid is not None and (0 < paid < total if total > 0 else total < paid < 0)
    return "partially_paid" if partial else "open"


def unified(invoice: Invoice) -> Invoice:
    """`invoice` with its kind and status by the rules above."""
    new_kind, new_status = kind(invoice.kind, invoice.total), status(invoice)
    if (new_kind, new_status) == (invoice.kind, invoice.status):
        return invoice
    return msgspec.structs.replace(invoice, kind=new_kind, status=new_status)
