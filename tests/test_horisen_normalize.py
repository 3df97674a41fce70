"""HORISEN normalization, tested by feeding it bytes: a realistic document with its
traffic-report rows, the status table, stamps and dates, exact amounts, what must be
refused, and properties over generated and mutated documents."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamd.errors import Rejected
from streamd.model import Address, Invoice, InvoiceLine, Party, PartyRef, TrafficLine, make_event
from streamd.providers.horisen import changes, wire
from streamd.providers.horisen.normalize import (
    NormalizedDocument,
    document_key,
    normalize_document,
    normalize_traffic,
    traffic_rows,
)

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)

#: A customer invoice as the documents export sends it (every documented field).
DOCUMENT = b"""{
  "id": 48213,
  "documentUuid": "5b0e6f0c-4a53-4c2e-9d1e-2f8f3c1a9b77",
  "documentNumber": "INV-2023-06-0042",
  "documentDate": "2023-07-01",
  "dueDate": "2023-07-31",
  "periodStart": "2023-06-01",
  "periodEnd": "2023-06-30",
  "currencyCode": "EUR",
  "amountNoVat": 1250.00,
  "amountVat": 237.50,
  "total": 1487.50,
  "totalUnpaid": 487.50,
  "totalPaid": 1000.00,
  "domesticCurrencyCode": "CHF",
  "domesticCurrencyRate": 0.9712,
  "domesticTotal": 1444.66,
  "status": "approved",
  "paymentStatus": "open",
  "paymentStatusDate": "2023-07-15 09:12:44",
  "statusDt": "2023-07-15 09:12:44",
  "insertDt": "2023-07-01 02:00:13",
  "bizPartnerId": 9917,
  "bizPartnerExternalRefId": "c7a1e0d2-6b1f-4f7e-8a43-0d9b5e2c1f60",
  "bizPartner": {
    "name": "Acme Messaging GmbH",
    "briefName": "ACME",
    "vatNumber": "CHE-123.456.789 MWST",
    "registrationNumber": "CHE-123.456.789",
    "email": "billing@acme.example",
    "address": "Bahnhofstrasse 1",
    "city": "Zurich",
    "zip": "8001",
    "countryCode": "ch"
  },
  "syncStatus": "synced",
  "items": [
    {"id": 1, "name": "SMS traffic June 2023", "quantity": 25000, "price": 0.05,
     "totalNoVat": 1250.00, "totalVat": 237.50}
  ]
}"""

TRAFFIC = [
    b'{"pricingConditionName": "Standard EU", "countryName": "Germany", "operatorName": '
    b'"Telekom Deutschland", "mcc": 262, "mnc": "01", "messageCount": 15000, "pricePerMessage": 0.05, '
    b'"totalAmount": 750.00, "sellCurrencyCode": "EUR"}',
    b'{"pricingConditionName": "Standard EU", "countryName": "Switzerland", "operatorName": "Swisscom", '
    b'"mcc": "228", "mnc": 1, "messageCount": 10000, "pricePerMessage": 0.05, "totalAmount": 500.00, '
    b'"sellCurrencyCode": "eur"}',
]

TRAFFIC_LINES = [
    TrafficLine(pricing="Standard EU", country="Germany", operator="Telekom Deutschland", mcc="262",
                mnc="01", messages=15000, unit_price=Decimal("0.05"), amount=Decimal("750.00"),
                currency="EUR"),
    TrafficLine(pricing="Standard EU", country="Switzerland", operator="Swisscom", mcc="228", mnc="1",
                messages=10000, unit_price=Decimal("0.05"), amount=Decimal("500.00"), currency="EUR"),
]


def norm(raw: bytes | dict[str, Any], traffic: list[bytes] | None = None) -> NormalizedDocument:
    if isinstance(raw, dict):
        raw = json.dumps(raw).encode()
    return normalize_document(raw, traffic, received_at=NOW)


def doc(**fields: Any) -> NormalizedDocument:
    return norm({"id": 17, "currencyCode": "EUR", "total": 121, **fields})


def rejected(raw: bytes | dict[str, Any], traffic: list[bytes] | None = None) -> str:
    with pytest.raises(Rejected) as info:
        norm(raw, traffic)
    return info.value.reason


# ---------------------------------------------------------------- a document, in full

def test_a_document_is_a_receivable_invoice_with_its_traffic() -> None:
    n = norm(DOCUMENT, TRAFFIC)
    assert n.key == "48213"
    assert n.time == datetime(2023, 7, 15, 9, 12, 44, tzinfo=UTC)
    assert n.status_dt == "2023-07-15 09:12:44"
    assert n.invoice == Invoice(
        kind="invoice", direction="receivable", number="INV-2023-06-0042",
        uuid="5b0e6f0c-4a53-4c2e-9d1e-2f8f3c1a9b77",
        party=PartyRef(key="9917", name="Acme Messaging GmbH", number="c7a1e0d2-6b1f-4f7e-8a43-0d9b5e2c1f60",
                       vat_number="CHE-123.456.789 MWST",
                       address=Address(line1="Bahnhofstrasse 1", postal_code="8001", city="Zurich",
                                       country="CH")),
        issued=date(2023, 7, 1), due=date(2023, 7, 31), period_start=date(2023, 6, 1),
        period_end=date(2023, 6, 30), paid=None,
        status="partially_paid", provider_status="approved/open",
        currency="EUR", net=Decimal("1250.00"), tax=Decimal("237.50"), total=Decimal("1487.50"),
        unpaid=Decimal("487.50"), paid_amount=Decimal("1000.00"), converted_currency="CHF",
        converted_total=Decimal("1444.66"),
        conversion_rate=Decimal("0.9712"), description="Period 2023-06-01 – 2023-06-30",
        lines=[InvoiceLine(description="SMS traffic June 2023", quantity=Decimal(25000),
                           unit_price=Decimal("0.05"), net=Decimal("1250.00"), tax=Decimal("237.50"),
                           total=Decimal("1487.50"))],
        traffic=TRAFFIC_LINES,
        created_at=datetime(2023, 7, 1, 2, 0, 13, tzinfo=UTC),
        updated_at=datetime(2023, 7, 15, 9, 12, 44, tzinfo=UTC))


def test_the_biz_partner_is_a_customer_party() -> None:
    n = norm(DOCUMENT)
    assert n.party == ("9917", Party(
        roles=["customer"], name="Acme Messaging GmbH", number="c7a1e0d2-6b1f-4f7e-8a43-0d9b5e2c1f60",
        email="billing@acme.example", vat_number="CHE-123.456.789 MWST",
        registration_number="CHE-123.456.789",
        address=Address(line1="Bahnhofstrasse 1", postal_code="8001", city="Zurich", country="CH")))


def test_without_traffic_the_invoice_has_none() -> None:
    assert norm(DOCUMENT).invoice.traffic == norm(DOCUMENT, []).invoice.traffic == []


def test_the_feed_accepts_the_invoice_and_the_party() -> None:
    n = norm(DOCUMENT, TRAFFIC)
    ev = make_event(provider=wire.PROVIDER, source="s", tenant="t", entity="invoice", op="updated",
                    key=n.key, time=n.time, data=n.invoice, raw=DOCUMENT)
    body = json.loads(ev.data)
    assert (body["total"], body["traffic"][0]["amount"], body["traffic"][0]["mnc"]) == (
        "1487.50", "750.00", "01")
    assert n.party is not None
    make_event(provider=wire.PROVIDER, source="s", tenant="t", entity="party", op="updated",
               key=n.party[0], time=n.time, data=n.party[1])
    assert document_key(DOCUMENT) == n.key


def test_a_sparse_document_keeps_what_it_has() -> None:
    n = norm({"id": "A-1", "currencyCode": "USD", "total": "10.00", "documentNumber": " ", "status": ""})
    # HORISEN says what it lacks: the fields added later are null, not left out.
    assert n.invoice == Invoice(direction="receivable", currency="USD", total=Decimal("10.00"),
                                uuid=None, period_start=None, period_end=None, paid_amount=None)
    assert (n.key, n.party, n.time, n.status_dt) == ("A-1", None, NOW, None)


def test_received_at_is_returned_in_utc() -> None:
    cest = timezone(timedelta(hours=2))
    n = normalize_document(b'{"id": 1, "currencyCode": "EUR", "total": 1}', None,
                           received_at=datetime(2026, 7, 1, 14, 0, tzinfo=cest))
    assert n.time == datetime(2026, 7, 1, 12, 0, tzinfo=UTC) and n.time.tzinfo is UTC


# ---------------------------------------------------------------- status

@pytest.mark.parametrize("status, payment, unpaid, unified, provider_status", [
    ("draft", "open", 121, "draft", "draft/open"),
    ("approved", "open", 121, "open", "approved/open"),
    ("approved", "open", 21, "partially_paid", "approved/open"),  # 0 < unpaid < total
    ("approved", "open", 0, "open", "approved/open"),
    ("approved", "open", None, "open", "approved/open"),
    ("approved", "partially_paid", 121, "partially_paid", "approved/partially_paid"),
    ("approved", "paid", 0, "paid", "approved/paid"),
    ("imported", "paid", 0, "paid", "imported/paid"),
    ("archived", "open", 100, "partially_paid", "archived/open"),
    ("archived", None, 100, "partially_paid", "archived/-"),  # one rule: unpaid between 0 and total
    ("approved", "overdue", 100, "partially_paid", "approved/overdue"),
    ("rejected", "open", 121, "cancelled", "rejected/open"),
    ("canceled", "paid", 0, "cancelled", "canceled/paid"),  # cancelled wins over paid
    ("Approved", "PAID", 0, "paid", "Approved/PAID"),  # read case-insensitively
    ("deleted", "open", 121, "unknown", "deleted/open"),  # unknown: kept, not refused
    (None, "paid", 0, "unknown", "-/paid"),
    (None, None, None, "unknown", None),
])
def test_status(status: str | None, payment: str | None, unpaid: int | None, unified: str,
                provider_status: str | None) -> None:
    inv = doc(status=status, paymentStatus=payment, totalUnpaid=unpaid).invoice
    assert (inv.status, inv.provider_status) == (unified, provider_status)


def test_every_wire_status_is_tested() -> None:
    assert set(wire.DOCUMENT_STATUS) == {"draft", "approved", "imported", "archived", "rejected", "canceled"}
    assert wire.PAYMENT_STATUS == ("open", "partially_paid", "paid")


@pytest.mark.parametrize("payment, when, paid", [
    ("paid", "2023-07-15", date(2023, 7, 15)),
    ("paid", "2023-07-15 23:30:00", date(2023, 7, 15)),  # no offset: local time, as written
    ("paid", "2023-07-15T23:30:00-05:00", date(2023, 7, 16)),  # an offset: the date in Zurich
    ("paid", None, None),
    ("open", "2023-07-15", None),
    ("partially_paid", "2023-07-15", None),
])
def test_paid_is_the_payment_status_date_of_a_paid_document(payment: str, when: str | None,
                                                            paid: date | None) -> None:
    assert doc(status="approved", paymentStatus=payment, paymentStatusDate=when).invoice.paid == paid


# ---------------------------------------------------------------- fields

@pytest.mark.parametrize("start, end, description", [
    ("2023-06-01", "2023-06-30", "Period 2023-06-01 – 2023-06-30"),
    ("2023-06-01 00:00:00", "2023-06-30 23:59:59", "Period 2023-06-01 – 2023-06-30"),
    ("2023-06-01", None, None),
    (None, "2023-06-30", None),
])
def test_description_is_the_period(start: str | None, end: str | None, description: str | None) -> None:
    assert doc(periodStart=start, periodEnd=end).invoice.description == description


def test_converted_amounts_need_a_domestic_currency() -> None:
    inv = doc(domesticCurrencyRate=0.5, domesticTotal=60.5).invoice
    assert (inv.converted_currency, inv.converted_total, inv.conversion_rate) == (None, None, None)
    inv = doc(domesticCurrencyCode="chf", domesticCurrencyRate=0.5, domesticTotal=60.5).invoice
    assert (inv.converted_currency, inv.converted_total, inv.conversion_rate) == (
        "CHF", Decimal("60.5"), Decimal("0.5"))
    assert (inv.converted_net, inv.converted_tax) == (None, None)


def test_currency_is_upper_cased() -> None:
    assert doc(currencyCode=" usd ").invoice.currency == "USD"


def test_party_needs_a_biz_partner_id() -> None:
    n = doc(bizPartner={"name": "Acme"}, bizPartnerExternalRefId="X-1")
    assert (n.party, n.invoice.party) == (None, None)
    n = doc(bizPartnerId="bp-7", bizPartnerExternalRefId="X-1")
    assert n.party == ("bp-7", Party(roles=["customer"], number="X-1"))
    assert n.invoice.party == PartyRef(key="bp-7", number="X-1", vat_number=None, address=None)


def test_brief_name_is_not_mapped_and_an_address_needs_a_part() -> None:
    n = doc(bizPartnerId=3, bizPartner={"briefName": "ACME", "city": "", "countryCode": None})
    assert n.party == ("3", Party(roles=["customer"]))
    n = doc(bizPartnerId=3, bizPartner={"countryCode": "de"})
    assert n.party is not None and n.party[1].address == Address(country="DE")


def test_lines_total_is_net_plus_tax_when_both_are_given() -> None:
    inv = doc(items=[{"name": "a", "totalNoVat": 0.1, "totalVat": 0.2},
                     {"name": "b", "totalNoVat": 10, "quantity": 2, "price": 5},
                     {"totalVat": 1},
                     {"name": " ", "totalNoVat": "12345678901234567890123456789012345.01",
                      "totalVat": "0.001"}]).invoice
    assert inv.lines == [
        InvoiceLine(description="a", net=Decimal("0.1"), tax=Decimal("0.2"), total=Decimal("0.3")),
        InvoiceLine(description="b", quantity=Decimal(2), unit_price=Decimal(5), net=Decimal(10)),
        InvoiceLine(tax=Decimal(1)),
        InvoiceLine(net=Decimal("12345678901234567890123456789012345.01"), tax=Decimal("0.001"),
                    total=Decimal("12345678901234567890123456789012345.011")),  # exact, not rounded
    ]


# ---------------------------------------------------------------- traffic reports

def test_a_traffic_row_is_a_traffic_line() -> None:
    assert [normalize_traffic(row) for row in TRAFFIC] == TRAFFIC_LINES
    assert normalize_traffic(b"{}") == TrafficLine()


@pytest.mark.parametrize("mcc, mnc, expected", [
    (262, 1, ("262", "1")), ("262", "01", ("262", "01")), ("262", "001", ("262", "001")),
    (" 262 ", "", ("262", None)), (None, None, (None, None)),
])
def test_mcc_and_mnc_are_strings(mcc: Any, mnc: Any, expected: tuple[str | None, str | None]) -> None:
    line = normalize_traffic(json.dumps({"mcc": mcc, "mnc": mnc}).encode())
    assert (line.mcc, line.mnc) == expected


def test_traffic_rows_are_the_answers_data() -> None:
    answer = b'{"data": [%s, %s], "meta": {}}' % (TRAFFIC[0], TRAFFIC[1])
    rows = traffic_rows(answer)
    assert [json.loads(r) for r in rows] == [json.loads(r) for r in TRAFFIC]
    assert all(type(r) is bytes for r in rows)
    assert traffic_rows(b'{"data": []}') == traffic_rows(b"{}") == []


@pytest.mark.parametrize("raw, reason", [
    (b"[]", "traffic reports: Expected `object`, got `array`"),
    (b'{"data": {}}', "traffic reports: Expected `array`, got `object` - at `$.data`"),
    (b'{"data": null}', "traffic reports: Expected `array`, got `null`"),
    (b"{", "traffic reports: Input data was truncated"),
    (b"\xff", "traffic reports: "),
])
def test_traffic_rows_refuse_another_shape(raw: bytes, reason: str) -> None:
    with pytest.raises(Rejected) as info:
        traffic_rows(raw)
    assert info.value.reason.startswith(reason)


@pytest.mark.parametrize("row, reason", [
    (b'{"messageCount": -1}', "traffic row: messageCount: -1 is negative"),
    (b'{"messageCount": 1.5}', "traffic row: Expected `int | null`, got `float` - at `$.messageCount`"),
    (b'{"sellCurrencyCode": "EURO"}', "traffic row: sellCurrencyCode: 'EURO' is not an ISO 4217 code"),
    (b'{"totalAmount": "NaN"}', "traffic row: totalAmount: NaN is not an amount"),
    (b'{"pricePerMessage": 1E+40}', "traffic row: pricePerMessage: 1E+40 is out of range"),
    (b'{"mnc": 1.0}', "traffic row: Expected `int | str | null`, got `float` - at `$.mnc`"),
    (b"[1]", "traffic row: Expected `object`, got `array`"),
    (b"nope", "traffic row: JSON is malformed"),
])
def test_a_bad_traffic_row_is_refused(row: bytes, reason: str) -> None:
    with pytest.raises(Rejected) as info:
        normalize_traffic(row)
    assert info.value.reason.startswith(reason)


def test_one_bad_traffic_row_refuses_the_document() -> None:
    reason = rejected(DOCUMENT, [TRAFFIC[0], b'{"messageCount": -3}'])
    assert reason == "document 48213: traffic[1]: messageCount: -3 is negative"
    reason = rejected(DOCUMENT, [b'{"sellCurrencyCode": "EURO"}'])
    assert reason == "document 48213: traffic[0]: sellCurrencyCode: 'EURO' is not an ISO 4217 code"
    reason = rejected(DOCUMENT, [TRAFFIC[0], b"17"])
    assert reason == "document 48213: traffic[1]: Expected `object`, got `int`"


# ---------------------------------------------------------------- time

@pytest.mark.parametrize("stamp, utc", [
    ("2023-07-15 09:12:44", datetime(2023, 7, 15, 9, 12, 44, tzinfo=UTC)),  # no offset: UTC
    ("2023-07-15T09:12:44", datetime(2023, 7, 15, 9, 12, 44, tzinfo=UTC)),
    ("2023-07-15T09:12:44Z", datetime(2023, 7, 15, 9, 12, 44, tzinfo=UTC)),
    ("2023-07-15T09:12:44+00:00", datetime(2023, 7, 15, 9, 12, 44, tzinfo=UTC)),
    ("2023-07-15T11:12:44+02:00", datetime(2023, 7, 15, 9, 12, 44, tzinfo=UTC)),
    ("2023-07-15T04:12:44-05:00", datetime(2023, 7, 15, 9, 12, 44, tzinfo=UTC)),
    ("2023-07-15 09:12:44.123456789", datetime(2023, 7, 15, 9, 12, 44, 123456, tzinfo=UTC)),
    (" 2023-07-15 09:12:44 ", datetime(2023, 7, 15, 9, 12, 44, tzinfo=UTC)),
])
def test_stamps_become_utc(stamp: str, utc: datetime) -> None:
    n = doc(statusDt=stamp, insertDt=stamp)
    assert n.invoice.created_at == n.invoice.updated_at == n.time == utc
    assert n.time.utcoffset() == timedelta(0)
    assert n.status_dt == stamp  # as sent: the poller hands it back to HORISEN


@pytest.mark.parametrize("fields, time", [
    ({"statusDt": "2023-07-15 09:00:00", "insertDt": "2023-07-01 00:00:00"},
     datetime(2023, 7, 15, 9, tzinfo=UTC)),
    ({"insertDt": "2023-07-01 00:00:00"}, datetime(2023, 7, 1, tzinfo=UTC)),
    ({"statusDt": "", "insertDt": "2023-07-01 00:00:00"}, datetime(2023, 7, 1, tzinfo=UTC)),
    ({"statusDt": None}, NOW),
])
def test_time_is_status_dt_else_insert_dt_else_received_at(fields: dict[str, Any], time: datetime) -> None:
    n = doc(**fields)
    assert n.time == time
    assert n.status_dt == (fields.get("statusDt") or None)


@pytest.mark.parametrize("value, day", [
    ("2023-07-01", date(2023, 7, 1)),
    ("2023-07-01 23:30:00", date(2023, 7, 1)),
    ("2023-07-01T00:00:00+02:00", date(2023, 7, 1)),  # the date as written
    ("", None),
    (None, None),
])
def test_dates_keep_the_date_as_written(value: str | None, day: date | None) -> None:
    inv = doc(documentDate=value, dueDate=value).invoice
    assert inv.issued == inv.due == day


# ---------------------------------------------------------------- exact amounts

def test_amounts_are_read_digit_for_digit() -> None:
    raw = (b'{"id": 9, "currencyCode": "EUR", "amountNoVat": 0.1, "amountVat": 0.2, "total": 0.3, '
           b'"totalUnpaid": 12345678901234567890.12}')
    inv = norm(raw).invoice
    assert inv.net is not None and inv.tax is not None
    assert inv.net + inv.tax == inv.total == Decimal("0.3")
    assert inv.unpaid == Decimal("12345678901234567890.12")
    body = json.loads(msgspec.json.Encoder(decimal_format="string").encode(inv))
    assert (body["net"], body["tax"], body["total"], body["unpaid"]) == (
        "0.1", "0.2", "0.3", "12345678901234567890.12")


@pytest.mark.parametrize("raw, total", [
    (b"1E+2", "100"),
    (b"1210.50", "1210.50"),
    (b'"1210.50"', "1210.50"),  # a decimal string is read too
    (b"-0.00", "0.00"),  # a negative zero loses its sign
    (b"1E-38", "1E-38"),
])
def test_amount_spellings(raw: bytes, total: str) -> None:
    inv = norm(b'{"id": 1, "currencyCode": "EUR", "total": %s}' % raw).invoice
    assert str(inv.total) == total


@pytest.mark.parametrize("unpaid, compared", [
    (None, None), ("487.50", "487.5"), ("487.5", "487.5"), ("1E+2", "100"), ("100.000", "100"),
    ("-0.00", "0"), ("0", "0"), ("0.000001", "0.000001"), ("-12.10", "-12.1"),
])
def test_amounts_are_compared_by_value(unpaid: str | None, compared: str | None) -> None:
    assert changes.compared(doc(totalUnpaid=unpaid).invoice)["unpaid"] == compared


def test_a_negative_total_is_a_credit_note() -> None:
    assert doc(total=-121, amountNoVat=-100, amountVat=-21).invoice.kind == "credit_note"
    assert doc(total=0).invoice.kind == doc(total=121).invoice.kind == "invoice"


# ---------------------------------------------------------------- refused

def _d(fields: bytes) -> bytes:
    """Document 123 with more fields."""
    return b'{"id": 123, "currencyCode": "EUR", "total": 1, %s}' % fields


@pytest.mark.parametrize("raw, reason", [
    (b'{"currencyCode": "EUR", "total": 1}', "document: Object missing required field `id`"),
    (b'{"id": null, "currencyCode": "EUR", "total": 1}', "document: Expected `int | str`, got `null`"),
    (b'{"id": "", "currencyCode": "EUR", "total": 1}', "document: no usable id: `id` is empty"),
    (b'{"id": 1.5}', "document: Expected `int | str`, got `float`"),
    (b'{"id": 123, "total": 1}', "document 123: currencyCode missing"),
    (b'{"id": 123, "currencyCode": "EURO", "total": 1}',
     "document 123: currencyCode: 'EURO' is not an ISO 4217 code"),
    (b'{"id": 123, "currencyCode": "EUR"}', "document 123: total missing"),
    (b'{"id": 123, "currencyCode": "EUR", "total": null}', "document 123: total missing"),
    (b'{"id": 123, "currencyCode": "EUR", "total": "ten"}',
     "document 123: Invalid decimal string - at `$.total`"),
    (b'{"id": 123, "currencyCode": "EUR", "total": "Infinity"}',
     "document 123: total: Infinity is not an amount"),
    (b'{"id": 123, "currencyCode": "EUR", "total": 1E+400}', "document 123: total: 1E+400 is out of range"),
    (b'{"id": 123, "currencyCode": "EUR", "total": 1E-39}', "document 123: total: 1E-39 is out of range"),
    (_d(b'"totalUnpaid": "NaN"'), "document 123: totalUnpaid: NaN"),
    (_d(b'"documentDate": "01.07.2023"'),
     "document 123: documentDate: '01.07.2023' is not a date"),
    (_d(b'"dueDate": "2023-02-30"'),
     "document 123: dueDate: '2023-02-30' is not a date"),
    (_d(b'"periodEnd": "June"'), "document 123: periodEnd: 'June'"),
    (_d(b'"paymentStatusDate": "soon"'),
     "document 123: paymentStatusDate: 'soon' is not a date"),
    (_d(b'"statusDt": "yesterday"'),
     "document 123: statusDt: 'yesterday' is not a date-time"),
    (_d(b'"statusDt": "2023-07-15"'),
     "document 123: statusDt: '2023-07-15' is not a date-time"),  # a date is no stamp
    (_d(b'"insertDt": "2023-07-15 25:00:00"'),
     "document 123: insertDt: '2023-07-15 25:00:00' is not a date-time"),
    (_d(b'"insertDt": "2023-07-15T10:00:00+0200"'),
     "document 123: insertDt:"),
    (_d(b'"insertDt": "9999-12-31T23:00:00-05:00"'),
     "document 123: insertDt: '9999-12-31T23:00:00-05:00' is out of range"),
    (_d(b'"statusDt": 20230715'),
     "document 123: Expected `str | null`, got `int` - at `$.statusDt`"),
    (_d(b'"domesticCurrencyCode": "Swiss franc"'),
     "document 123: domesticCurrencyCode: 'Swiss franc' is not an ISO 4217 code"),
    (_d(b'"bizPartnerId": 5, "bizPartner": {"countryCode": "CHE"}'),
     "document 123: bizPartner.countryCode: 'CHE' is not an ISO 3166-1 alpha-2 code"),
    (_d(b'"bizPartner": "Acme"'),
     "document 123: Expected `object | null`, got `str` - at `$.bizPartner`"),
    (_d(b'"items": [{"price": "NaN"}]'),
     "document 123: items[0].price: NaN is not an amount"),
    (_d(b'"items": [{}, {"totalVat": 1E+38}]'),
     "document 123: items[1].totalVat: 1E+38 is out of range"),
    (_d(b'"items": null'),
     "document 123: Expected `array`, got `null` - at `$.items`"),
    (b"[1, 2]", "document: Expected `object`, got `array`"),
    (b'"document"', "document: Expected `object`, got `str`"),
    (b"null", "document: Expected `object`, got `null`"),
    (b'{"id": 5, "total": ', "document: Input data was truncated"),
    (b'{"id": 5, not json}', "document: JSON is malformed"),
    (b"\xff\xfe\x00garbage", "document: "),
    (b"", "document: Input data was truncated"),
    (b"[" * 100_000, "document: "),  # deeper than msgspec follows: still only Rejected
])
def test_refused_with_a_reason(raw: bytes, reason: str) -> None:
    assert rejected(raw).startswith(reason)


@pytest.mark.parametrize("raw, key", [
    (DOCUMENT, "48213"), (b'{"id": 17, "total": "ten"}', "17"), (b'{"id": "0042", "statusDt": 5}', "0042"),
    (b'{"id": 12345678901234567890}', "12345678901234567890"),
])
def test_document_key_reads_the_id_alone(raw: bytes, key: str) -> None:
    assert document_key(raw) == key


@pytest.mark.parametrize("raw", [
    b"{}", b'{"id": null}', b'{"id": ""}', b'{"id": " "}', b'{"id": [1]}', b'{"id": true}', b"{", b"",
    b"17", b"[]", b"\xff",
])
def test_document_key_refuses_a_document_without_a_usable_id(raw: bytes) -> None:
    with pytest.raises(Rejected, match="^document: no usable id"):
        document_key(raw)


# ---------------------------------------------------------------- properties

def _json() -> st.SearchStrategy[Any]:
    leaf = (st.none() | st.booleans() | st.integers() | st.text(max_size=12)
            | st.floats(allow_nan=False, allow_infinity=False))
    return st.recursive(leaf, lambda kids: st.lists(kids, max_size=3)
                        | st.dictionaries(st.text(max_size=5), kids, max_size=3), max_leaves=8)


_encode = msgspec.json.Encoder(decimal_format="number")


def _try_encode(value: Any) -> bytes | None:
    try:
        return _encode.encode(value)
    except (TypeError, ValueError, OverflowError):  # a value JSON cannot carry
        return None


def _ends_well(raw: bytes, traffic: list[bytes] | None = None) -> NormalizedDocument | None:
    """Every entry point ends in a result or `Rejected`; the document's result, if any."""
    for call in (document_key, normalize_traffic, traffic_rows):
        try:
            call(raw)
        except Rejected as exc:
            assert exc.reason
    try:
        n = normalize_document(raw, traffic, received_at=NOW)
    except Rejected as exc:
        assert exc.reason.startswith("document")
        return None
    assert n.key == document_key(raw) and n.time.tzinfo is UTC
    make_event(provider="horisen", source="s", tenant="t", entity="invoice", op="updated",
               key=n.key, time=n.time, data=n.invoice)  # the feed takes whatever normalizes
    return n


_SETTINGS = settings(database=None, deadline=None, max_examples=300,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@_SETTINGS
@given(value=_json(), rows=st.none() | st.lists(_json(), max_size=2))
def test_any_json_ends_in_a_result_or_rejected(value: Any, rows: list[Any] | None) -> None:
    raw = _try_encode(value)
    if raw is None:
        return
    traffic = None if rows is None else [r for r in map(_try_encode, rows) if r is not None]
    _ends_well(raw, traffic)


@settings(database=None, deadline=None)
@given(raw=st.binary(max_size=64))
def test_any_bytes_end_in_a_result_or_rejected(raw: bytes) -> None:
    _ends_well(raw, [raw])


# Valid documents: the shapes HORISEN sends, with values that normalize.
_PLACES = st.integers(0, 4)
_AMOUNT = _PLACES.flatmap(lambda p: st.decimals(min_value=-10**15, max_value=10**15, places=p))
_DAY = st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 31))
_OFFSET = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
_MOMENT = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31))
_STAMP = st.one_of(
    _MOMENT.map(lambda t: t.strftime("%Y-%m-%d %H:%M:%S")),
    _MOMENT.map(lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")),
    st.builds(lambda t, tz: t.replace(tzinfo=tz).isoformat(), _MOMENT, _OFFSET),
)
_TEXT = st.text(max_size=12)
_STATUS = st.sampled_from([*wire.DOCUMENT_STATUS, "deleted"])
_PAYMENT = st.sampled_from([*wire.PAYMENT_STATUS, "overdue"])
_PAYMENT_DATE = st.one_of(_DAY.map(date.isoformat), _STAMP)
_BIZ_PARTNER = st.fixed_dictionaries({}, optional={
    "name": _TEXT, "briefName": _TEXT, "vatNumber": _TEXT, "registrationNumber": _TEXT, "email": _TEXT,
    "address": _TEXT, "city": _TEXT, "zip": _TEXT, "countryCode": st.sampled_from(["CH", "de", "", None])})
_ITEM = st.fixed_dictionaries({}, optional={
    "id": st.integers(0, 10**6), "name": _TEXT, "quantity": _AMOUNT, "price": _AMOUNT,
    "totalNoVat": _AMOUNT, "totalVat": _AMOUNT})
_ROW = st.fixed_dictionaries({}, optional={
    "pricingConditionName": _TEXT, "countryName": _TEXT, "operatorName": _TEXT,
    "mcc": st.integers(0, 999) | st.from_regex(r"\A[0-9]{3}\Z"),
    "mnc": st.integers(0, 999) | st.from_regex(r"\A[0-9]{2,3}\Z"),
    "messageCount": st.integers(0, 10**9), "pricePerMessage": _AMOUNT, "totalAmount": _AMOUNT,
    "sellCurrencyCode": st.sampled_from(["EUR", "chf", "USD"])})
_PAYING: dict[str, st.SearchStrategy[Any]] = {
    "status": _STATUS, "paymentStatus": _PAYMENT, "totalUnpaid": _AMOUNT, "paymentStatusDate": _PAYMENT_DATE}
_OTHERS: dict[str, st.SearchStrategy[Any]] = {
    "documentUuid": _TEXT, "documentNumber": _TEXT, "documentDate": _DAY.map(date.isoformat),
    "dueDate": _DAY.map(date.isoformat), "periodStart": _DAY.map(date.isoformat),
    "periodEnd": _DAY.map(date.isoformat), "amountNoVat": _AMOUNT, "amountVat": _AMOUNT,
    "totalPaid": _AMOUNT, "domesticCurrencyCode": st.sampled_from(["CHF", "usd"]),
    "domesticCurrencyRate": _AMOUNT, "domesticTotal": _AMOUNT, "statusDt": _STAMP, "insertDt": _STAMP,
    "bizPartnerId": st.integers(1, 10**9) | st.from_regex(r"\A[a-z0-9-]{1,8}\Z"),
    "bizPartnerExternalRefId": _TEXT, "bizPartner": _BIZ_PARTNER, "syncStatus": _TEXT,
    "items": st.lists(_ITEM, max_size=3)}
_DOCUMENT = st.fixed_dictionaries(
    {"id": st.integers(1, 10**9) | st.from_regex(r"\A[A-Za-z0-9-]{1,8}\Z"),
     "currencyCode": st.sampled_from(["EUR", "chf", " USD "]), "total": _AMOUNT},
    optional={**_PAYING, **_OTHERS})


@_SETTINGS
@given(document=_DOCUMENT, field=st.sampled_from(sorted(
    {"id", "currencyCode", "total", *_PAYING, *_OTHERS, "bizPartner.countryCode", "items.0", "x"})),
       junk=st.one_of(_json(), _STAMP, _AMOUNT.map(str), st.sampled_from(["NaN", "1E+400", "eur", ""])),
       rows=st.lists(_ROW, max_size=2), bad_row=st.integers(0, 5))
def test_a_mutated_document_ends_in_a_result_or_rejected(document: dict[str, Any], field: str, junk: Any,
                                                         rows: list[dict[str, Any]], bad_row: int) -> None:
    top, _, sub = field.partition(".")
    if top == "bizPartner":
        document["bizPartner"] = {**document.get("bizPartner", {}), sub: junk}
    elif top == "items":
        document["items"] = [junk, *document.get("items", [])]
    else:
        document[top] = junk
    raw = _try_encode(document)
    if raw is None:
        return
    traffic = [r for r in map(_try_encode, rows) if r is not None]
    if bad_row < len(traffic):
        traffic[bad_row] = _try_encode({**rows[bad_row], "messageCount": junk}) or b"{}"
    _ends_well(raw, traffic)


def _spelled(value: Decimal) -> str:
    return str(value)  # how the wire writes it (decimal_format="number")


@_SETTINGS
@given(document=_DOCUMENT, rows=st.lists(_ROW, max_size=3))
def test_a_valid_document_keeps_every_amount_digit_for_digit(document: dict[str, Any],
                                                             rows: list[dict[str, Any]]) -> None:
    n = _ends_well(_encode.encode(document), [_encode.encode(r) for r in rows])
    assert n is not None  # generated valid: it normalizes
    inv = n.invoice
    pairs: list[tuple[Decimal | None, Any]] = [
        (inv.total, document["total"]), (inv.net, document.get("amountNoVat")),
        (inv.tax, document.get("amountVat")), (inv.unpaid, document.get("totalUnpaid"))]
    if document.get("domesticCurrencyCode"):
        pairs += [(inv.converted_total, document.get("domesticTotal")),
                  (inv.conversion_rate, document.get("domesticCurrencyRate"))]
    for line, item in zip(inv.lines, document.get("items", []), strict=True):
        pairs += [(line.net, item.get("totalNoVat")), (line.tax, item.get("totalVat")),
                  (line.unit_price, item.get("price")), (line.quantity, item.get("quantity"))]
        if line.net is not None and line.tax is not None:
            assert line.total == item["totalNoVat"] + item["totalVat"]
    for traffic, row in zip(inv.traffic, rows, strict=True):
        pairs += [(traffic.unit_price, row.get("pricePerMessage")), (traffic.amount, row.get("totalAmount"))]
        assert traffic.messages == row.get("messageCount")
    for got, sent in pairs:
        assert (None if got is None else str(got)) == (None if sent is None else _spelled(sent))
    body = json.loads(msgspec.json.Encoder(decimal_format="string").encode(inv))
    assert body["total"] == _spelled(document["total"])
    assert msgspec.json.decode(json.dumps(body).encode(), type=Invoice) == inv  # and it decodes back


#: Document fields a change is not judged on (`changes.NOISE`, `changes.UNMAPPED`), as
#: the wire names them.
_NOISE = ("statusDt", "syncStatus", "bizPartner", "bizPartnerExternalRefId")


@_SETTINGS
@given(first=_DOCUMENT, second=_DOCUMENT, redrawn=st.sets(st.sampled_from(_NOISE)),
       ids=st.lists(st.integers(0, 10**6), max_size=3))
def test_what_is_noise_never_changes_the_compared_hash(first: dict[str, Any], second: dict[str, Any],
                                                       redrawn: set[str], ids: list[int]) -> None:
    """`second` is `first` with noise fields drawn again (and items renumbered): the same
    document, whatever else both hold."""
    second = {**first, **{f: second[f] for f in redrawn if f in second}}
    second["items"] = [{**item, "id": i} for item, i in zip(first.get("items", []), ids, strict=False)] \
        + first.get("items", [])[len(ids):]
    try:
        a = normalize_document(_encode.encode(first), None, received_at=NOW)
        b = normalize_document(_encode.encode(second), None, received_at=NOW)
    except Rejected:
        return  # a bizPartner drawn again may hold a bad country: refused, not compared
    assert changes.compared_hash(a.invoice) == changes.compared_hash(b.invoice)
