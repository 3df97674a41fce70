"""One rule for credit notes and one for partial payment, whichever provider an invoice
comes from (model/rules.py, docs/model.md "Kinds and statuses"): each normalizer is fed
its own wire fields, and every one of them must say the same."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from streamd.model import Invoice, PaymentRef, rules
from streamd.providers.asperion.normalize import normalize_record
from streamd.providers.asteria.normalize import normalize as asteria
from streamd.providers.connec.normalize import entity_event
from streamd.providers.horisen.normalize import normalize_document
from streamd.providers.synthetic.normalize import normalize as synthetic

from .connec_samples import SAMPLES

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode()


def _decoded(data: bytes) -> Invoice:
    return msgspec.json.decode(data, type=Invoice)


# One builder per provider: (total, unpaid) → the unified invoice, in that provider's words.
# `unpaid` None: the provider says nothing of what is open.

def from_asteria(total: str, unpaid: str | None) -> Invoice:
    paid = [] if unpaid is None else [{"date": "2021-12-01", "total": float(Decimal(total) - Decimal(unpaid)),
                                       "currency": "SEK"}]
    body = {"_id": "5ef5adfcc3cd659588c53295", "companyId": "5eafe37ddc7a940058c76479", "type": "invoice",
            "info": {"status": "UNPAID", "isForecast": False},
            "sums": {"original": {"invoiceTotal": float(total), "currency": "SEK"}}, "payments": paid}
    (ev,) = asteria("INVOICE_UPDATE", _json(body), source="s", received_at=NOW)
    return _decoded(ev.data)


def from_asperion(total: str, unpaid: str | None) -> Invoice:
    rec: dict[str, Any] = {"id": 5517, "amountInclVat": float(total), "status": 6}
    if unpaid is not None:
        rec["amountOpen"] = float(unpaid)
    data = normalize_record("salesinvoices", _json(rec), received_at=NOW).data
    assert isinstance(data, Invoice)
    return data


def from_horisen(total: str, unpaid: str | None) -> Invoice:
    doc: dict[str, Any] = {"id": 48213, "currencyCode": "EUR", "total": float(total), "status": "approved",
                           "paymentStatus": "open"}
    if unpaid is not None:
        doc["totalUnpaid"] = float(unpaid)
    return normalize_document(_json(doc), None, received_at=NOW).invoice


def from_connec(total: str, unpaid: str | None) -> Invoice:
    inv = copy.deepcopy(SAMPLES["invoices"])
    inv["amount"] = {"total_amount": float(total), "currency": "AUD"}
    inv["lines"] = []
    inv.pop("balance")
    if unpaid is not None:
        inv["balance"] = float(unpaid)
    ev = entity_event("invoices", _json(inv), source="s", tenant=None, received_at=NOW)
    return _decoded(ev.data)


def from_synthetic(total: str, unpaid: str | None) -> Invoice:
    data = {"direction": "receivable", "currency": "USD", "total": total, "status": "open", "unpaid": unpaid}
    rec = {"tenant": "acme", "entity": "invoice", "op": "created", "key": "inv-1", "data": data}
    return _decoded(synthetic(_json(rec), source="s", received_at=NOW).data)


PROVIDERS: dict[str, Callable[[str, str | None], Invoice]] = {
    "asteria": from_asteria, "asperion": from_asperion, "horisen": from_horisen,
    "connec": from_connec, "synthetic": from_synthetic}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_negative_invoice_is_a_credit_note_everywhere(provider: str) -> None:
    assert PROVIDERS[provider]("-121.00", None).kind == "credit_note"
    assert PROVIDERS[provider]("121.00", None).kind == "invoice"


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("total, unpaid, status", [
    ("121.00", "21.00", "partially_paid"),  # some paid, some not
    ("121.00", "121.00", "open"),  # nothing paid yet
    ("121.00", "0.00", "open"),  # all paid, but the provider does not say paid: not inferred
    ("121.00", None, "open"),  # nothing known
    ("-121.00", "-21.00", "partially_paid"),  # a credit note, partly settled
])
def test_partial_payment_is_one_rule_everywhere(provider: str, total: str, unpaid: str | None,
                                                 status: str) -> None:
    assert PROVIDERS[provider](total, unpaid).status == status


def test_the_rule_sums_payments_only_in_the_invoices_currency() -> None:
    base = Invoice(direction="receivable", currency="SEK", total=Decimal(100), status="open")
    part = [PaymentRef(amount=Decimal(40), currency="SEK")]
    assert rules.unified(msgspec.structs.replace(base, payments=part)).status == "partially_paid"
    other = [PaymentRef(amount=Decimal(40), currency="EUR")]
    assert rules.unified(msgspec.structs.replace(base, payments=other)).status == "open"
    # What the provider says is unpaid wins over the payments it lists.
    told = msgspec.structs.replace(base, payments=part, unpaid=Decimal(100))
    assert rules.unified(told).status == "open"
    # Orders and the provider's own statuses are left alone.
    assert rules.kind("order", Decimal(-1)) == "order"
    assert rules.unified(msgspec.structs.replace(base, status="paid", unpaid=Decimal(40))).status == "paid"
