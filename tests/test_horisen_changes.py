"""What makes a HORISEN document's `updated`: every change to the document, in the seed's
field names, and nothing else (`changes.NOISE`). Pure: documents in, versions and
verdicts out."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from msgspec import UNSET

from streamd.model import Invoice
from streamd.providers.horisen import changes
from streamd.providers.horisen.normalize import NormalizedDocument, normalize_document

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)

#: An approved, open invoice: 1000.00 + 7.7 % VAT.
BASE: dict[str, Any] = {
    "id": 4711, "documentUuid": "0f9d5c3e-1b7a-4f7e-9a51-3c2b1d0e9f88", "documentNumber": "INV-2026-004711",
    "documentDate": "2026-02-28", "dueDate": "2026-03-30", "periodStart": "2026-02-01",
    "periodEnd": "2026-02-28", "currencyCode": "CHF", "amountNoVat": 1000.00, "amountVat": 77.00,
    "total": 1077.00, "totalUnpaid": 1077.00, "totalPaid": 0.00, "domesticCurrencyCode": "EUR",
    "domesticCurrencyRate": 1.0456, "domesticTotal": 1126.11, "status": "approved", "paymentStatus": "open",
    "paymentStatusDate": None, "statusDt": "2026-02-28 09:00:00", "insertDt": "2026-02-28 08:59:00",
    "bizPartnerId": 17, "bizPartnerExternalRefId": "c7a1e0d2", "syncStatus": "synced",
    "bizPartner": {"name": "Alpine Messaging AG", "briefName": "ALPINE", "vatNumber": "CHE-123.456.789 MWST",
                   "address": "Bahnhofstrasse 1", "city": "Zürich", "zip": "8001", "countryCode": "CH"},
    "items": [{"id": 47111, "name": "SMS traffic Switzerland", "quantity": 20000, "price": 0.05,
               "totalNoVat": 1000.00, "totalVat": 77.00}],
}
PAID: dict[str, Any] = {**BASE, "totalUnpaid": 0.00, "totalPaid": 1077.00, "paymentStatus": "paid",
                        "paymentStatusDate": "2026-03-05 10:00:00", "statusDt": "2026-03-05 10:00:00"}


def norm(doc: dict[str, Any]) -> NormalizedDocument:
    return normalize_document(json.dumps(doc).encode(), None, received_at=NOW)


def emitted(doc: dict[str, Any]) -> tuple[str, bytes]:
    """The version and data the feed holds after `doc` was emitted."""
    ev = changes.invoice_event(norm(doc), source="hz", tenant="acme", previous="")
    return ev.version, ev.data


def is_change(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Whether the poller emits an `updated` for `after`, the feed holding `before`."""
    version, data = emitted(before)
    n = norm(after)
    if changes.unchanged(version, n):
        return False
    return not changes.same_document(data, n.invoice)


#: Each change the issue names, and others, in the seed's field names.
CHANGES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "dueDate moved": ({}, {"dueDate": "2026-04-13"}),
    "VAT corrected, total and unpaid unchanged": ({}, {
        "amountVat": 0.00, "amountNoVat": 1077.00,
        "items": [{**BASE["items"][0], "totalNoVat": 1077.00, "totalVat": 0.00}]}),
    "currencyCode": ({}, {"currencyCode": "EUR"}),
    "documentNumber (renumbered)": ({}, {"documentNumber": "INV-2026-004712"}),
    "documentDate": ({}, {"documentDate": "2026-03-01"}),
    "documentUuid": ({}, {"documentUuid": "1f9d5c3e-1b7a-4f7e-9a51-3c2b1d0e9f88"}),
    "periodStart and periodEnd": ({}, {"periodStart": "2026-01-01", "periodEnd": "2026-01-31"}),
    "domesticTotal": ({}, {"domesticTotal": 1126.12}),
    "domesticCurrencyRate": ({}, {"domesticCurrencyRate": 1.0457}),
    "domesticCurrencyCode": ({}, {"domesticCurrencyCode": "USD"}),
    "items[].quantity": ({}, {"items": [{**BASE["items"][0], "quantity": 21000}]}),
    "items[].price": ({}, {"items": [{**BASE["items"][0], "price": 0.051}]}),
    "items[].name": ({}, {"items": [{**BASE["items"][0], "name": "SMS traffic Liechtenstein"}]}),
    "an item added": ({}, {"items": [*BASE["items"], {"id": 47112, "name": "Setup", "quantity": 1,
                                                      "price": 0, "totalNoVat": 0, "totalVat": 0}]}),
    "bizPartnerId (another customer)": ({}, {"bizPartnerId": 18}),
    "status approved -> canceled": ({}, {"status": "canceled"}),
    "status draft -> approved": ({"status": "draft"}, {}),
    "status approved -> archived": ({}, {"status": "archived"}),
    "paid in full": ({}, {"totalUnpaid": 0.00, "totalPaid": 1077.00, "paymentStatus": "paid",
                          "paymentStatusDate": "2026-03-05 10:00:00"}),
    "part paid, paymentStatus stays open": ({}, {"totalUnpaid": 577.00, "totalPaid": 500.00}),
    "totalPaid alone": ({}, {"totalPaid": 1.00}),
    "a paid invoice's paymentStatusDate": (PAID, {"paymentStatusDate": "2026-03-06 10:00:00"}),
    "a paid invoice's dueDate": (PAID, {"dueDate": "2026-04-13"}),
    "a paid invoice's VAT": (PAID, {"amountVat": 0.00, "amountNoVat": 1077.00}),
}


@pytest.mark.parametrize("name", CHANGES)
def test_each_change_to_the_document_is_one_updated(name: str) -> None:
    start, fields = CHANGES[name]
    before = {**BASE, **start} if start is not PAID else PAID
    after = {**before, **fields} if fields else dict(BASE)
    assert is_change(before, after)
    # ...and the next listing, which shows the document as it now is, emits nothing more.
    assert not is_change(after, after)


#: What is no change to the document: each in `changes.NOISE` or `changes.UNMAPPED`.
NOT_CHANGES: dict[str, dict[str, Any]] = {
    "statusDt alone": {"statusDt": "2026-03-01 08:00:00"},
    "syncStatus": {"syncStatus": "pending"},
    "items[].id": {"items": [{**BASE["items"][0], "id": 99}]},
    "bizPartner.name": {"bizPartner": {**BASE["bizPartner"], "name": "Alpine Messaging Group AG"}},
    "bizPartner.vatNumber": {"bizPartner": {**BASE["bizPartner"], "vatNumber": "CHE-987.654.321 MWST"}},
    "bizPartner address": {"bizPartner": {**BASE["bizPartner"], "address": "Seestrasse 2", "zip": "8002"}},
    "bizPartner.briefName": {"bizPartner": {**BASE["bizPartner"], "briefName": "APM"}},
    "bizPartnerExternalRefId": {"bizPartnerExternalRefId": "d8b2"},
    "an amount's spelling": {"totalUnpaid": "1077.0", "total": 1077, "domesticCurrencyRate": "1.04560"},
    "paymentStatusDate of an invoice not paid in full": {"paymentStatusDate": "2026-03-02"},
}


@pytest.mark.parametrize("name", NOT_CHANGES)
def test_what_is_no_change_to_the_document_emits_nothing(name: str) -> None:
    assert not is_change(BASE, {**BASE, **NOT_CHANGES[name]})


def test_noise_and_unmapped_fields_say_why() -> None:
    for name, why in {**changes.NOISE, **changes.UNMAPPED}.items():
        assert len(why) > 20, name
    compared = changes.compared(norm(BASE).invoice)
    assert not {k for k in changes.NOISE if "." not in k} & set(compared)
    assert set(compared["party"]) == {"key"}


def test_a_version_an_older_streamd_wrote_is_no_change() -> None:
    """Before this comparison, the version carried a hash of (status, paymentStatus,
    totalUnpaid, paymentStatusDate), and the stored invoice lacked the fields added since:
    the same document is then no change, and only its stored version is brought up to date."""
    n = norm(BASE)
    new = msgspec.to_builtins(n.invoice)
    for name in ("uuid", "period_start", "period_end", "paid_amount", "traffic_missing"):
        new.pop(name, None)  # traffic_missing: left out already (UNSET) when no reports came
    new["party"] = {k: new["party"][k] for k in ("key", "name", "number")}
    old_data = json.dumps(new).encode()
    old_version = "poll:0123456789abcdef~fedcba9876543210#00112233445566aa"
    assert not changes.unchanged(old_version, n)  # another hash...
    assert changes.same_document(old_data, n.invoice)  # ...but the same document
    again = changes.restamped(old_version, n)
    assert again.startswith("poll:0123456789abcdef~") and again.endswith("#00112233445566aa")
    assert changes.unchanged(again, n)
    # A real change still is one, against the older data too.
    assert not changes.same_document(old_data, norm({**BASE, "dueDate": "2026-04-13"}).invoice)
    assert msgspec.json.decode(old_data, type=Invoice).uuid is UNSET  # the older data lacks it


#: Spellings of one number and the one string each is compared as. The string goes into
#: the compared hash every emitted invoice's version carries: another one for the same
#: number would make every stored version look changed.
CANONICAL = {"1E+1": "10", "10.0": "10", "10": "10", "100": "100", "-0.00": "0", "0E+2": "0",
             "1.050": "1.05", "12E-3": "0.012", "-7.10": "-7.1", "0.000001": "0.000001",
             "1.23456789012345678901234567890E+5": "123456.78901234567890123456789"}


@pytest.mark.parametrize("spelling", CANONICAL)
def test_an_amount_is_compared_as_one_string_in_every_spelling(spelling: str) -> None:
    assert changes.canonical(Decimal(spelling)) == CANONICAL[spelling]


def test_the_compared_hash_of_a_document_stays_what_stored_versions_carry() -> None:
    # Computed by the streamd that wrote the versions in users' feeds (ed40dcb).
    assert changes.compared_hash(norm(BASE).invoice) == "36df7aaa15aaf513"
