"""Connec! normalization, tested by feeding it bytes: one realistic entity per collection,
notification bodies, keys and groups, the status and type tables, stamps and dates, what
must be refused, the account webhooks, and properties over generated and mutated entities."""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamd.errors import Rejected
from streamd.model import (
    Address,
    Event,
    Invoice,
    InvoiceLine,
    Link,
    Party,
    PartyRef,
    Product,
    Record,
    Transaction,
    entity_type,
)
from streamd.model.canonical import instant_text
from streamd.providers.connec import wire
from streamd.providers.connec.normalize import (
    account_event,
    entity_event,
    entity_key,
    entity_tenant,
    split_body,
)

from .connec_samples import SAMPLES

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
GROUP = "cld-3f7x"
ORG, PERSON, ITEM, INVOICE = "org-7c1e", "per-2b9d", "itm-5a0f", "inv-9e44"


def ref(connec_id: str) -> list[dict[str, str]]:
    return [{"provider": "connec", "id": connec_id, "realm": GROUP}]


def ids(connec_id: str) -> list[dict[str, str]]:
    """An id list as Connec! sends it once an app has the entity too: the app's id first."""
    return [{"provider": "myob", "id": f"myob-{connec_id}", "realm": "co-77"}, *ref(connec_id)]


#: A supplier's side of the books, one entity per collection, as Connec! sends them.
samples: dict[str, dict[str, Any]] = {
    "organizations": {
        "id": ids(ORG), "group_id": GROUP, "created_at": "2019-02-11T21:04:55Z",
        "updated_at": "2019-06-03T03:15:20.250Z", "name": "  Kauri Timber Supplies Ltd ",
        "reference": "SUP-0009", "is_customer": False, "is_supplier": True, "tax_number": "123-456-789",
        "status": "ACTIVE", "industry": "Wholesale", "email": {"address": "ar@kauritimber.example"},
        "phone": {"landline": "", "mobile": "+64 21 555 0199"},
        "address": {"billing": {"line1": "14 Mill Road", "line2": None, "city": "Whangarei",
                                "region": "Northland", "postal_code": "0110", "country": "nz"},
                    "shipping": {"line1": "PO Box 88", "country": "NZ"}},
    },
    "people": {
        "id": ref(PERSON), "group_id": GROUP, "created_at": "2019-02-11T21:06:00Z",
        "updated_at": "2019-02-11T21:06:00Z", "first_name": "Aroha", "last_name": " Ngata ",
        "reference": "C-118", "is_customer": False, "is_supplier": True,
        "email": {"address": "aroha@kauritimber.example"},
        "phone_work": {"landline": "+64 9 430 1234", "mobile": "+64 21 555 0100"},
        "address_work": {"billing": {"city": "Whangarei", "country": "NZ"}},
        "organization_id": ref(ORG),
    },
    "items": {
        "id": ref(ITEM), "group_id": GROUP, "created_at": "2019-01-20T00:00:00Z",
        "updated_at": "2019-05-01T09:30:00+12:00", "code": "PINE-90x45", "name": "Pine framing 90x45",
        "description": "H1.2 treated, per metre", "status": "INACTIVE", "unit": "m",
        "sale_price": {"net_amount": 4.35, "tax_rate": 15.0, "currency": "nzd"},
    },
    "invoices": {
        "id": ids(INVOICE), "group_id": GROUP, "created_at": "2019-06-01T02:00:00Z",
        "updated_at": "2019-06-20T04:12:33Z", "transaction_number": "BILL-2219",
        "transaction_date": "2019-06-01T00:00:00Z", "due_date": "2019-06-20", "status": "PAID",
        "type": "SUPPLIER", "title": "Framing timber, June", "balance": 0,
        "amount": {"net_amount": 1305.00, "tax_amount": 195.75, "total_amount": 1500.75, "currency": "NZD"},
        "organization_id": ref(ORG), "person_id": ref(PERSON),
        "lines": [
            {"line_number": 1, "description": "Pine framing 90x45", "quantity": 300,
             "unit_price": {"net_amount": 4.35, "tax_rate": 15.0},
             "total_price": {"net_amount": 1305.00, "tax_amount": 195.75, "total_amount": 1500.75},
             "item_id": ref(ITEM)},
            {"line_number": 2, "description": "Delivery (waived)", "quantity": 1},
        ],
    },
    "payments": {
        "id": ref("pay-31d0"), "group_id": GROUP, "created_at": "2019-06-20T04:12:30Z",
        "updated_at": "2019-06-20T04:12:30Z", "transaction_date": "2019-06-20T00:00:00Z",
        "type": "SUPPLIER", "status": "ACTIVE", "payment_reference": "DC 2219",
        "amount": {"total_amount": 1500.75, "currency": "NZD"}, "organization_id": ref(ORG),
        "payment_lines": [{"amount": 1500.75, "linked_transactions": [
            {"id": ref(INVOICE), "class": "Invoice"}]}],
    },
    "accounts": {
        "id": ref("acc-0310"), "group_id": GROUP, "created_at": "2019-01-02T00:00:00Z",
        "updated_at": "2019-01-02T00:00:00Z", "code": "310", "name": "Cost of Goods Sold",
        "classification": "EXPENSE", "status": "ACTIVE", "currency": "NZD", "balance": 18250.40,
    },
    "company": {
        "id": ref("cmp-0001"), "group_id": GROUP, "created_at": "2019-01-02T00:00:00Z",
        "updated_at": "2019-03-04T05:06:07Z", "name": "Tane Builders Ltd", "currency": "NZD",
        "timezone": "Pacific/Auckland", "fiscal_year_first_month": 4,
    },
    "tax_codes": {
        "id": ref("tax-gst"), "group_id": GROUP, "created_at": "2019-01-02T00:00:00Z",
        "updated_at": "2019-01-02T00:00:00Z", "name": "GST on Expenses", "code": "INPUT2",
        "purchase_tax_rate": 15.0, "sale_tax_rate": 0,
    },
}


def encode(entity: dict[str, Any]) -> bytes:
    return json.dumps(entity).encode()


def event(collection: str, entity: dict[str, Any] | bytes | None = None, *, tenant: str | None = "path",
          **fields: Any) -> Event:
    if not isinstance(entity, bytes):
        entity = encode({**copy.deepcopy(samples[collection] if entity is None else entity), **fields})
    return entity_event(collection, entity, source="connec-1", tenant=tenant, received_at=NOW)


def data(ev: Event) -> Any:
    return msgspec.json.decode(ev.data, type=entity_type(ev.entity))


def rejected(collection: str, entity: dict[str, Any] | bytes | None = None, **fields: Any) -> str:
    with pytest.raises(Rejected) as info:
        event(collection, entity, **fields)
    return info.value.reason


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# ---------------------------------------------------------------- one entity per collection

def test_an_invoice() -> None:
    ev = event("invoices")
    assert (ev.provider, ev.source, ev.tenant, ev.entity, ev.op, ev.key) == (
        "connec", "connec-1", GROUP, "invoice", "updated", INVOICE)
    assert ev.time == "2019-06-20T04:12:33.000Z"
    assert ev.raw == encode(samples["invoices"])
    assert data(ev) == Invoice(
        kind="invoice", direction="payable", number="BILL-2219", party=PartyRef(key=ORG),
        issued=date(2019, 6, 1), due=date(2019, 6, 20), status="paid", provider_status="PAID",
        currency="NZD", net=Decimal("1305.0"), tax=Decimal("195.75"), total=Decimal("1500.75"),
        unpaid=Decimal(0), description="Framing timber, June",
        lines=[InvoiceLine(description="Pine framing 90x45", product=ITEM, quantity=Decimal(300),
                           unit_price=Decimal("4.35"), net=Decimal("1305.0"), tax=Decimal("195.75"),
                           tax_rate=Decimal("15.0"), total=Decimal("1500.75")),
               InvoiceLine(description="Delivery (waived)", quantity=Decimal(1))],
        created_at=utc(2019, 6, 1, 2), updated_at=utc(2019, 6, 20, 4, 12, 33))
    body = json.loads(ev.data)
    assert (body["total"], body["lines"][0]["unit_price"]) == ("1500.75", "4.35")  # strings, not floats


def test_an_organization() -> None:
    ev = event("organizations")
    assert (ev.entity, ev.key, ev.op, ev.time) == ("party", ORG, "updated", "2019-06-03T03:15:20.250Z")
    assert data(ev) == Party(
        roles=["supplier"], name="Kauri Timber Supplies Ltd", number="SUP-0009",
        email="ar@kauritimber.example", phone="+64 21 555 0199", vat_number="123-456-789",
        address=Address(line1="14 Mill Road", postal_code="0110", city="Whangarei", region="Northland",
                        country="NZ"),
        active=True, created_at=utc(2019, 2, 11, 21, 4, 55),
        updated_at=datetime(2019, 6, 3, 3, 15, 20, 250000, tzinfo=UTC))


def test_a_person() -> None:
    ev = event("people")
    assert (ev.entity, ev.key, ev.op) == ("party", PERSON, "created")
    assert data(ev) == Party(
        roles=["supplier"], name="Aroha Ngata", number="C-118", email="aroha@kauritimber.example",
        phone="+64 9 430 1234", address=Address(city="Whangarei", country="NZ"),
        created_at=utc(2019, 2, 11, 21, 6), updated_at=utc(2019, 2, 11, 21, 6))


def test_a_payment() -> None:
    ev = event("payments")
    assert (ev.entity, ev.key, ev.op) == ("transaction", "pay-31d0", "created")
    assert data(ev) == Transaction(
        kind="payment", direction="out", date=date(2019, 6, 20), status="completed", provider_status="ACTIVE",
        amount=Decimal("1500.75"), currency="NZD", reference="DC 2219", party=PartyRef(key=ORG),
        links=[Link(entity="invoice", key=INVOICE, type="Invoice", amount=Decimal("1500.75"),
                    currency="NZD")],
        created_at=utc(2019, 6, 20, 4, 12, 30), updated_at=utc(2019, 6, 20, 4, 12, 30))


def test_an_item() -> None:
    ev = event("items")
    assert (ev.entity, ev.key, ev.time) == ("product", ITEM, "2019-04-30T21:30:00.000Z")
    assert data(ev) == Product(
        name="Pine framing 90x45", number="PINE-90x45", description="H1.2 treated, per metre", unit="m",
        unit_price=Decimal("4.35"), currency="NZD", tax_rate=Decimal("15.0"), active=False,
        created_at=utc(2019, 1, 20), updated_at=utc(2019, 4, 30, 21, 30))


@pytest.mark.parametrize("collection, entity, name, attributes", [
    ("accounts", "account", "Cost of Goods Sold",
     {"code": "310", "classification": "EXPENSE", "status": "ACTIVE", "currency": "NZD",
      "balance": "18250.4"}),
    ("company", "company", "Tane Builders Ltd",
     {"currency": "NZD", "timezone": "Pacific/Auckland", "fiscal_year_first_month": "4"}),
    ("tax_codes", "tax_code", "GST on Expenses",
     {"code": "INPUT2", "purchase_tax_rate": "15.0", "sale_tax_rate": "0"}),
])
def test_the_other_collections_are_records(collection: str, entity: str, name: str,
                                           attributes: dict[str, Any]) -> None:
    ev = event(collection)
    assert (ev.entity, ev.tenant) == (entity, GROUP)
    record = data(ev)
    assert isinstance(record, Record) and record.name == name
    assert json.loads(ev.data)["attributes"] == attributes  # every number: a decimal string
    assert record.created_at == utc(2019, 1, 2)


def test_a_record_keeps_a_nested_value_and_a_name_that_is_no_string() -> None:
    record = data(event("accounts", name=["x"], parent={"id": ref("acc-1"), "rate": 0.1}, huge=10**30))
    assert record.name is None
    assert record.attributes["parent"] == {"id": ref("acc-1"), "rate": "0.1"}
    assert record.attributes["huge"] == str(10**30)  # every number a decimal string


def test_the_modules_samples_normalize_and_refer_to_each_other() -> None:
    assert set(SAMPLES) == set(wire.COLLECTIONS)
    events = {c: entity_event(c, encode(e), source="s", tenant=None, received_at=NOW)
              for c, e in SAMPLES.items()}
    for collection, ev in events.items():
        assert ev.entity == wire.COLLECTIONS[collection] and ev.tenant == SAMPLES[collection]["group_id"]
        assert ev.key == entity_key(encode(SAMPLES[collection])) and data(ev) is not None
    invoice, payment = data(events["invoices"]), data(events["payments"])
    assert invoice.party.key == events["organizations"].key
    assert invoice.lines[0].product == events["items"].key
    assert [link.key for link in payment.links] == [events["invoices"].key]


# ---------------------------------------------------------------- tables

@pytest.mark.parametrize("status, unified", [
    ("DRAFT", "draft"), ("AUTHORISED", "open"), ("PAID", "paid"), ("VOIDED", "cancelled"),
    ("paid", "paid"), ("SUBMITTED", "unknown"), ("", "unknown"), (None, "unknown"),
])
def test_invoice_status(status: str | None, unified: str) -> None:
    inv = data(event("invoices", status=status))
    assert (inv.status, inv.provider_status) == (unified, status or None)


def test_every_wire_invoice_status_is_tested() -> None:
    assert set(wire.INVOICE_STATUS) == {"DRAFT", "AUTHORISED", "PAID", "VOIDED"}


@pytest.mark.parametrize("kind, direction", [
    ("CUSTOMER", "receivable"), ("SUPPLIER", "payable"), ("supplier", "payable"), (None, "receivable"),
])
def test_invoice_type_is_the_direction(kind: str | None, direction: str) -> None:
    assert data(event("invoices", type=kind)).direction == direction


@pytest.mark.parametrize("status, unified", [
    ("ACTIVE", "completed"), ("INACTIVE", "cancelled"), ("VOIDED", "cancelled"), ("DRAFT", "pending"),
    ("PENDING", "pending"), ("active", "completed"), ("RECONCILED", "unknown"), (None, "unknown"),
])
def test_payment_status(status: str | None, unified: str) -> None:
    tx = data(event("payments", status=status))
    assert (tx.status, tx.provider_status) == (unified, status)


@pytest.mark.parametrize("kind, direction", [("CUSTOMER", "in"), ("SUPPLIER", "out"), (None, None)])
def test_payment_type_is_the_direction(kind: str | None, direction: str | None) -> None:
    assert data(event("payments", type=kind)).direction == direction


def test_payment_links() -> None:
    lines = [{"amount": 50, "linked_transactions": [
        {"id": ref("inv-1"), "class": "Invoice", "applied_amount": 20.5},
        {"id": ref("inv-2"), "class": "Invoice"},
        {"id": [{"provider": "xero", "id": "CN-1"}], "class": "CreditNote", "applied_amount": -5},
        {"id": "so-9"},
        {"class": "Invoice", "applied_amount": 1}]}]  # no id: nothing to link
    assert data(event("payments", payment_lines=lines)).links == [
        Link(entity="invoice", key="inv-1", type="Invoice", amount=Decimal("20.5"), currency="NZD"),
        Link(entity="invoice", key="inv-2", type="Invoice", amount=Decimal(50), currency="NZD"),
        Link(entity="credit_note", key="xero:CN-1", type="CreditNote", amount=Decimal(-5), currency="NZD"),
        Link(entity="unknown", key="so-9", amount=Decimal(50), currency="NZD"),
    ]


@pytest.mark.parametrize("fields, party", [
    ({"organization_id": ref(ORG), "person_id": ref(PERSON)}, PartyRef(key=ORG)),
    ({"organization_id": None, "person_id": ref(PERSON)}, PartyRef(key=PERSON)),
    ({"organization_id": [], "person_id": None}, None),
    ({"organization_id": [{"provider": "xero", "id": "X-1"}], "person_id": None}, PartyRef(key="xero:X-1")),
    ({"organization_id": "org-plain", "person_id": None}, PartyRef(key="org-plain")),
])
def test_the_party_is_the_organization_else_the_person(fields: dict[str, Any],
                                                       party: PartyRef | None) -> None:
    assert data(event("invoices", **fields)).party == party
    assert data(event("payments", **fields)).party == party


@pytest.mark.parametrize("status, active", [("ACTIVE", True), ("INACTIVE", False), ("inactive", False),
                                            ("ARCHIVED", True), (None, None), (" ", None)])
def test_active_is_the_status(status: str | None, active: bool | None) -> None:
    assert data(event("organizations", status=status)).active is active
    assert data(event("items", status=status)).active is active


@pytest.mark.parametrize("first, last, name", [
    ("Aroha", "Ngata", "Aroha Ngata"), (" Aroha ", None, "Aroha"), (None, "Ngata", "Ngata"),
    ("", " ", None),
])
def test_a_persons_name(first: str | None, last: str | None, name: str | None) -> None:
    assert data(event("people", first_name=first, last_name=last)).name == name


@pytest.mark.parametrize("phone, expected", [
    ({"landline": "+64 9 1", "mobile": "+64 21 2"}, "+64 9 1"), ({"landline": " ", "mobile": "+64 21 2"},
                                                                  "+64 21 2"),
    ({}, None), (None, None),
])
def test_phone_is_the_landline_else_the_mobile(phone: dict[str, str] | None, expected: str | None) -> None:
    assert data(event("organizations", phone=phone)).phone == expected
    assert data(event("people", phone_work=phone)).phone == expected


def test_an_address_comes_from_billing_and_needs_a_part() -> None:
    assert data(event("organizations", address={"shipping": {"city": "X"}})).address is None
    assert data(event("organizations", address={"billing": {"line1": " ", "country": None}})).address is None
    address = data(event("people", address_work={"billing": {"country": " au "}})).address
    assert address == Address(country="AU")


def test_roles() -> None:
    assert data(event("organizations", is_customer=True, is_supplier=True)).roles == ["customer", "supplier"]
    assert data(event("people", is_customer=None, is_supplier=None)).roles == []


# ---------------------------------------------------------------- stamps, op, version

@pytest.mark.parametrize("stamp, instant", [
    ("2019-06-20T04:12:33Z", utc(2019, 6, 20, 4, 12, 33)),
    ("2019-06-20T16:12:33+12:00", utc(2019, 6, 20, 4, 12, 33)),
    ("2019-06-20T04:12:33.5-01:30", datetime(2019, 6, 20, 5, 42, 33, 500000, tzinfo=UTC)),
    ("2019-06-20T04:12:33", utc(2019, 6, 20, 4, 12, 33)),  # no offset: UTC
    ("2019-06-20 04:12:33Z", utc(2019, 6, 20, 4, 12, 33)),
])
def test_stamps_are_utc(stamp: str, instant: datetime) -> None:
    ev = event("items", updated_at=stamp)
    assert data(ev).updated_at == instant
    assert ev.time == instant.isoformat(timespec="milliseconds")[:23] + "Z"
    # the stamp as the instant it is, however it was written: one spelling, one id
    assert ev.version.startswith(instant_text(instant) + "#")


@pytest.mark.parametrize("value, day", [
    ("2019-06-01", date(2019, 6, 1)),  # a date as written
    ("2019-06-01T23:30:00-05:00", date(2019, 6, 2)),  # a stamp: its date in UTC, the default zone
    ("2019-06-01T00:00:00Z", date(2019, 6, 1)), (" ", None), (None, None),
])
def test_dates_are_dates_in_the_business_time_zone(value: str | None, day: date | None) -> None:
    assert data(event("invoices", transaction_date=value)).issued == day
    assert data(event("payments", transaction_date=value)).date == day


@pytest.mark.parametrize("created, updated, op", [
    ("2019-01-01T00:00:00Z", "2019-01-01T00:00:00Z", "created"),
    ("2019-01-01T00:00:00Z", "2019-01-01T12:00:00.000+12:00", "created"),  # the same instant
    ("2019-01-01T00:00:00Z", "2019-01-01T00:00:01Z", "updated"),
    (None, "2019-01-01T00:00:00Z", "updated"),
    ("2019-01-01T00:00:00Z", None, "updated"),
    (None, None, "updated"),
])
def test_created_when_created_at_is_updated_at(created: str | None, updated: str | None, op: str) -> None:
    assert event("company", created_at=created, updated_at=updated).op == op


def test_without_updated_at_the_time_is_received_at_and_the_version_the_content() -> None:
    ev = event("company", updated_at=None)
    assert ev.time == "2026-11-21T12:00:00.000Z" and ev.version.startswith("sha256:")
    cest = timezone(timedelta(hours=2))
    later = entity_event("company", encode({**samples["company"], "updated_at": None}), source="s",
                         tenant=None, received_at=datetime(2026, 11, 21, 15, 0, tzinfo=cest))
    assert later.time == "2026-11-21T13:00:00.000Z" and later.id == ev.id


def test_the_same_version_seen_by_webhook_and_by_poll_is_one_event() -> None:
    entity = samples["invoices"]
    webhook_body = json.dumps({"organizations": [samples["organizations"]], "invoices": [entity]},
                              indent=2).encode()
    (_, org_raw), (collection, webhook_raw) = split_body(webhook_body)
    poll_raw = json.dumps(dict(reversed(entity.items())), separators=(",", ":")).encode()  # other bytes
    assert webhook_raw != poll_raw
    by_webhook = entity_event(collection, webhook_raw, source="s", tenant="from-path", received_at=NOW)
    by_poll = entity_event("invoices", poll_raw, source="s", tenant=GROUP,
                           received_at=NOW + timedelta(minutes=5))
    assert by_webhook.id == by_poll.id and by_webhook.data == by_poll.data
    assert by_webhook.version == by_poll.version and by_webhook.version.startswith("2019-06-20T04:12:33Z#")
    # a new version, or another content under the same stamp, is another event
    assert event("invoices", updated_at="2019-06-21T00:00:00Z").id != by_poll.id
    assert event("invoices", balance=10).id != by_poll.id
    assert event("invoices", public_note="not mapped").id == by_poll.id


def test_the_webhook_and_the_poller_agree_on_values_however_they_are_written() -> None:
    """The same version of an invoice, as a webhook and a poll may write it: `updated_at`
    with or without milliseconds, `total_amount` as `100.0` or `100`, and the group from
    `group_id` or (the webhook's path) standing in for it. One change, one id."""
    polled = {**copy.deepcopy(samples["invoices"]), "updated_at": "2019-06-20T04:12:33Z"}
    polled["amount"] = {**polled["amount"], "total_amount": 100, "tax_amount": 13.0}
    hooked = copy.deepcopy(polled)
    del hooked["group_id"]
    hooked["id"] = [{"provider": "connec", "id": INVOICE}]  # no realm either: the path's group
    hooked["updated_at"] = "2019-06-20T04:12:33.000Z"
    hooked["amount"] = {**hooked["amount"], "total_amount": 100.0, "tax_amount": 13}
    hooked_raw = json.dumps(hooked).replace("100.0", "100.00").encode()
    by_poll = entity_event("invoices", encode(polled), source="poll", tenant=GROUP, received_at=NOW)
    by_hook = entity_event("invoices", hooked_raw, source="hook", tenant=GROUP, received_at=NOW)
    assert (by_hook.tenant, by_hook.key) == (by_poll.tenant, by_poll.key) == (GROUP, INVOICE)
    assert by_hook.data != by_poll.data  # each keeps the digits it was sent...
    assert by_hook.version == by_poll.version and by_hook.id == by_poll.id  # ...one change


# ---------------------------------------------------------------- notification bodies

def test_split_body_keeps_body_order_and_each_entitys_bytes() -> None:
    body = (b'{"invoices": [ {"id": "a"} , {"id":"b", "x": [1, 2]} ],\n'
            b' "company": {"id": "c"}, "people": [], "journals": [{"id": "j"}]}')
    assert split_body(body) == [("invoices", b'{"id": "a"}'), ("invoices", b'{"id":"b", "x": [1, 2]}'),
                                ("company", b'{"id": "c"}'), ("journals", b'{"id": "j"}')]
    assert split_body(b"{}") == []


def test_a_split_body_normalizes_entity_by_entity() -> None:
    body = encode({"company": samples["company"], "people": [samples["people"], {"id": []}],
                   "journals": [{"id": ref("j")}]})
    outcomes = []
    for collection, raw in split_body(body):
        try:
            outcomes.append(entity_event(collection, raw, source="s", tenant=None, received_at=NOW).entity)
        except Rejected as exc:
            outcomes.append(exc.reason)
    assert outcomes == ["company", "party", "people: no usable id: `id` is missing or empty",
                        "unknown collection 'journals'"]


def test_a_list_item_that_is_no_object_is_kept_and_refused_alone() -> None:
    ((collection, raw),) = split_body(b'{"invoices": [42]}')
    assert raw == b"42"
    with pytest.raises(Rejected, match=r"^invoices: Expected `object`, got `int`"):
        entity_event(collection, raw, source="s", tenant="t", received_at=NOW)


@pytest.mark.parametrize("body, reason", [
    (b"[]", "notification: Expected `object`, got `array`"),
    (b'"invoices"', "notification: Expected `object`, got `str`"),
    (b"", "notification: Input data was truncated"),
    (b'{"invoices": [1,}', "notification: JSON is malformed"),
    (b"\xff", "notification: "),
    (b'{"invoices": "none"}', "notification: 'invoices' is neither an object nor a list: b'\"none\"'"),
    (b'{"company": null}', "notification: 'company' is neither an object nor a list"),
    (b'{"people": [], "items": 3}', "notification: 'items' is neither an object nor a list"),
    (b'{"a": ' + b"[" * 100_000, "notification: "),
])
def test_split_body_refuses(body: bytes, reason: str) -> None:
    with pytest.raises(Rejected) as info:
        split_body(body)
    assert info.value.reason.startswith(reason)


# ---------------------------------------------------------------- keys and groups

@pytest.mark.parametrize("value, key", [
    (ids("inv-1"), "inv-1"),  # the connec entry, wherever it is
    ([{"provider": "xero", "id": "X-1"}, {"provider": "myob", "id": "M-1"}], "xero:X-1"),
    ([{"provider": "connec", "id": " "}, {"provider": "xero", "id": 7}], "xero:7"),
    ([{"id": "bare"}, {"provider": "xero", "id": "X-1"}], "bare"),
    ([{"provider": "connec", "id": 12345678901234567890}], "12345678901234567890"),
    ("plain-id", "plain-id"), (17, "17"),
])
def test_entity_key(value: Any, key: str) -> None:
    assert entity_key(encode({"id": value})) == key


@pytest.mark.parametrize("raw", [
    b"{}", b'{"id": null}', b'{"id": []}', b'{"id": ""}', b'{"id": [{"provider": "connec"}]}',
    b'{"id": true}', b'{"id": [{"id": 1.5}]}', b'{"id": {"provider": "connec"}}', b"[]", b"", b"\xff",
])
def test_entity_key_refuses_an_entity_without_a_usable_id(raw: bytes) -> None:
    with pytest.raises(Rejected, match="^no usable id"):
        entity_key(raw)


def test_entity_key_reads_the_id_alone() -> None:
    assert entity_key(b'{"id": "k", "group_id": 5, "updated_at": 7, "amount": "x"}') == "k"


@pytest.mark.parametrize("entity, fallback, tenant", [
    ({"group_id": "cld-1", "id": ref("x")}, "path", "cld-1"),
    ({"group_id": " ", "id": ref("x")}, "path", GROUP),  # the realm of the connec id
    ({"id": [{"provider": "xero", "id": "1", "realm": "xero-org"}, {"provider": "connec", "id": "x"}]},
     "path", "path"),  # only the connec entry's realm counts
    ({"id": "x"}, " path ", "path"),
])
def test_entity_tenant(entity: dict[str, Any], fallback: str, tenant: str) -> None:
    assert entity_tenant(encode(entity), fallback) == tenant
    assert event("company", {**entity, "updated_at": None}, tenant=fallback).tenant == tenant


@pytest.mark.parametrize("raw", [b'{"id": "x"}', b'{"group_id": "", "id": "x"}', b'{"group_id": 5}', b"[]"])
def test_entity_tenant_refuses_an_entity_without_a_group(raw: bytes) -> None:
    with pytest.raises(Rejected, match="^no (usable )?group"):
        entity_tenant(raw, None)
    with pytest.raises(Rejected, match="^no (usable )?group"):
        entity_tenant(raw, "")


# ---------------------------------------------------------------- refused

INV = f"invoices {INVOICE}: "


def _invoice(**fields: Any) -> bytes:
    return encode({**samples["invoices"], **fields})


@pytest.mark.parametrize("collection, raw, reason", [
    ("journals", encode(samples["invoices"]), "unknown collection 'journals'"),
    ("invoices", _invoice(amount={"total_amount": 1}), INV + "amount.currency missing"),
    ("invoices", _invoice(amount={"currency": "NZD"}), INV + "amount.total_amount missing"),
    ("invoices", _invoice(amount=None), INV + "amount.currency missing"),
    ("invoices", _invoice(amount={"currency": "NZ$", "total_amount": 1}),
     INV + "amount.currency: 'NZ$' is not an ISO 4217 code"),
    ("invoices", _invoice(type="REFUND"), INV + "type: 'REFUND' is not one of CUSTOMER, SUPPLIER"),
    ("payments", encode({**samples["payments"], "type": "BANK"}),
     "payments pay-31d0: type: 'BANK' is not one of CUSTOMER, SUPPLIER"),
    ("payments", encode({**samples["payments"], "amount": {"currency": "NZD"}}),
     "payments pay-31d0: amount.total_amount missing"),
    ("invoices", _invoice(transaction_date="01/06/2019"),
     INV + "transaction_date: '01/06/2019' is not a date"),
    ("invoices", _invoice(due_date="2019-02-30"), INV + "due_date: '2019-02-30' is not a date"),
    ("invoices", _invoice(updated_at="2019-06-20"), INV + "updated_at: '2019-06-20' is not a date-time"),
    ("invoices", _invoice(created_at="2019-06-20T25:00:00Z"),
     INV + "created_at: '2019-06-20T25:00:00Z' is not a date-time"),
    ("invoices", _invoice(created_at="2019-06-20T10:00:00+0200"), INV + "created_at:"),
    ("company", encode({**samples["company"], "updated_at": "0001-01-01T00:00:00+01:00"}),
     "company cmp-0001: updated_at: '0001-01-01T00:00:00+01:00' is out of range"),
    ("invoices", _invoice(updated_at=20190620), INV + "Expected `str | null`, got `int` - at `$.updated_at`"),
    ("invoices", _invoice(balance="NaN"), INV + "balance: NaN is not an amount"),
    ("invoices", _invoice(balance=1e40), INV + "balance: 1E+40 is out of range"),
    ("invoices", _invoice(lines=[{}, {"total_price": {"tax_amount": "Infinity"}}]),
     INV + "lines[1].total_price.tax_amount: Infinity is not an amount"),
    ("invoices", _invoice(lines=[{"quantity": "many"}]),
     INV + "Invalid decimal string - at `$.lines[0].quantity`"),
    ("invoices", _invoice(lines=None), INV + "Expected `array`, got `null` - at `$.lines`"),
    ("payments", encode({**samples["payments"], "payment_lines": [
        {"linked_transactions": [{"id": "i", "applied_amount": "1e999999"}]}]}),
     "payments pay-31d0: payment_lines[0].linked_transactions[0].applied_amount: 1E+999999 is out of range"),
    ("organizations", encode({**samples["organizations"], "address": {"billing": {"country": "NZL"}}}),
     f"organizations {ORG}: address.billing.country: 'NZL' is not an ISO 3166-1 alpha-2 code"),
    ("people", encode({**samples["people"], "address_work": {"billing": {"country": "New Zealand"}}}),
     f"people {PERSON}: address_work.billing.country: 'New Zealand' is not an ISO 3166-1 alpha-2 code"),
    ("items", encode({**samples["items"], "sale_price": {"currency": "dollars"}}),
     f"items {ITEM}: sale_price.currency: 'dollars' is not an ISO 4217 code"),
    ("organizations", encode({**samples["organizations"], "is_customer": "yes"}),
     f"organizations {ORG}: Expected `bool | null`, got `str` - at `$.is_customer`"),
    ("accounts", encode({**samples["accounts"], "balance": "X"}).replace(b'"X"', b"1e400"),
     "accounts acc-0310: attributes.balance: 1E+400 is out of range (more than 38 digits before the point)"),
    ("accounts", encode({**samples["accounts"], "group_id": None, "id": "a-1"}),
     "accounts a-1: no group"),
    ("invoices", _invoice(group_id=5), INV + "Expected `str | null`, got `int` - at `$.group_id`"),
    ("invoices", b'{"id": 5, "amount": ', "invoices: Input data was truncated"),
    ("invoices", b'{"id": [{"provider": 1}]}',
     "invoices: Expected `str | null`, got `int` - at `$.id[0].provider`"),
    ("invoices", b"[1, 2]", "invoices: Expected `object`, got `array`"),
    ("company", b"null", "company: Expected `object`, got `null`"),
    ("invoices", b"\xff\xfe", "invoices: "),
    ("invoices", b"", "invoices: Input data was truncated"),
    # deeper than msgspec follows, even to read the key: still only Rejected
    ("invoices", b'{"id": "deep", "lines": ' + b"[" * 100_000, "invoices: maximum recursion depth"),
    ("accounts", b'{"id": "deep", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "accounts: maximum"),
])
def test_refused_with_a_reason(collection: str, raw: bytes, reason: str) -> None:
    with pytest.raises(Rejected) as info:
        entity_event(collection, raw, source="s", tenant=None, received_at=NOW)
    assert info.value.reason.startswith(reason)


def test_a_record_nested_deep_is_kept_or_refused_never_crashes() -> None:
    for depth in (50, 400, 900, 990, 1200):
        raw = b'{"id": "d", "group_id": "g", "x": ' + b"[" * depth + b"]" * depth + b"}"
        try:
            ev = entity_event("accounts", raw, source="s", tenant=None, received_at=NOW)
        except Rejected as exc:
            assert exc.reason.startswith(("accounts d: ", "accounts: maximum recursion depth"))
        else:
            assert ev.entity == "account"


# ---------------------------------------------------------------- account webhooks

def test_a_group_deletion() -> None:
    ev = account_event("group", "cld-9p4k", None, source="connec-1", received_at=NOW)
    assert (ev.entity, ev.op, ev.key, ev.tenant, ev.version) == (
        "group", "deleted", "cld-9p4k", "cld-9p4k", "deleted:account-webhook")
    assert data(ev) == Record(attributes={"group_id": "cld-9p4k"})
    again = account_event("group", "cld-9p4k", None, source="connec-1", received_at=NOW + timedelta(hours=1))
    assert again.id == ev.id  # a redelivered DELETE is a duplicate


def test_a_member_removal() -> None:
    ev = account_event("user", "cld-9p4k", "usr-2", source="connec-1", received_at=NOW)
    assert (ev.entity, ev.op, ev.key, ev.tenant) == ("user", "deleted", "usr-2", "cld-9p4k")
    assert data(ev) == Record(attributes={"group_id": "cld-9p4k"})
    assert ev.id == account_event("user", "cld-9p4k", "usr-2", source="connec-1", received_at=NOW).id
    others = {account_event("user", "cld-9p4k", "usr-3", source="s", received_at=NOW).id,
              account_event("user", "cld-0000", "usr-2", source="s", received_at=NOW).id,
              account_event("group", "cld-9p4k", None, source="s", received_at=NOW).id}
    assert ev.id not in others and len(others) == 3


@pytest.mark.parametrize("kind, group, user, reason", [
    ("group", "", None, "group deletion: the group id is empty"),
    ("group", " ", None, "group deletion: the group id is empty"),
    ("user", "", "usr-2", "user deletion: the group id is empty"),
    ("user", "cld-1", None, "user deletion in group cld-1: the user id is empty"),
    ("user", "cld-1", "", "user deletion in group cld-1: the user id is empty"),
    ("member", "cld-1", "usr-2", "unknown account webhook 'member'"),
])
def test_account_events_need_their_ids(kind: Any, group: str, user: str | None, reason: str) -> None:
    with pytest.raises(Rejected) as info:
        account_event(kind, group, user, source="s", received_at=NOW)
    assert info.value.reason == reason


# ---------------------------------------------------------------- properties

def _json() -> st.SearchStrategy[Any]:
    leaf = (st.none() | st.booleans() | st.integers() | st.text(max_size=12)
            | st.floats(allow_nan=False, allow_infinity=False))
    return st.recursive(leaf, lambda kids: st.lists(kids, max_size=3)
                        | st.dictionaries(st.text(max_size=6), kids, max_size=3), max_leaves=8)


_encode = msgspec.json.Encoder(decimal_format="number")


def _try_encode(value: Any) -> bytes | None:
    try:
        return _encode.encode(value)
    except (TypeError, ValueError, OverflowError):  # a value JSON cannot carry
        return None


def _ends_well(collection: str, raw: bytes) -> Event | None:
    """Every entry point ends in a result or `Rejected`; the event, if any."""
    for call in (entity_key, lambda r: entity_tenant(r, None), split_body):
        try:
            call(raw)
        except Rejected as exc:
            assert exc.reason
    try:
        ev = entity_event(collection, raw, source="s", tenant="t", received_at=NOW)
    except Rejected as exc:
        assert exc.reason.startswith(collection)
        return None
    assert ev.key == entity_key(raw) and ev.tenant == entity_tenant(raw, "t")
    assert ev.entity == wire.COLLECTIONS[collection] and ev.time.endswith("Z")
    assert isinstance(data(ev), entity_type(ev.entity))
    return ev


_SETTINGS = settings(database=None, deadline=None, max_examples=250,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
_COLLECTIONS = st.sampled_from(sorted(wire.COLLECTIONS))


@_SETTINGS
@given(value=_json(), collection=_COLLECTIONS)
def test_any_json_ends_in_an_event_or_rejected(value: Any, collection: str) -> None:
    raw = _try_encode(value)
    if raw is not None:
        _ends_well(collection, raw)


@_SETTINGS
@given(body=st.dictionaries(st.sampled_from([*wire.COLLECTIONS, "journals"]),
                            st.lists(_json(), max_size=3) | _json(), max_size=4))
def test_any_body_splits_into_entities_that_end_well(body: dict[str, Any]) -> None:
    raw = _try_encode(body)
    if raw is None:
        return
    try:
        entities = split_body(raw)
    except Rejected as exc:
        assert exc.reason.startswith("notification: ")
        return
    assert [c for c, _ in entities] == [c for c, v in body.items()
                                        for _ in (v if isinstance(v, list) else [v])]
    for collection, entity in entities:
        if collection in wire.COLLECTIONS:
            _ends_well(collection, entity)


@settings(database=None, deadline=None)
@given(raw=st.binary(max_size=64), collection=_COLLECTIONS)
def test_any_bytes_end_in_an_event_or_rejected(raw: bytes, collection: str) -> None:
    _ends_well(collection, raw)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a JSON value: its keys and list indexes."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            found += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += _paths(v, (*prefix, i))
    return found


_ENTITIES = [(c, e) for c, e in samples.items()] + [(c, e) for c, e in SAMPLES.items()]
_JUNK = st.one_of(_json(), st.sampled_from([
    "NaN", "Infinity", "1E+400", "-0", "", " ", "nzd", "2019-06-20", "2019-02-30T00:00:00Z", "INACTIVE",
    "SUPPLIER", "BOGUS", "connec", [], {}, [{}], [{"provider": "connec"}], 1e300, -1, 10**40]))


@_SETTINGS
@given(pick=st.integers(0, len(_ENTITIES) - 1), data_=st.data(), junk=_JUNK)
def test_a_mutated_entity_ends_in_an_event_or_rejected(pick: int, data_: st.DataObject, junk: Any) -> None:
    collection, entity = _ENTITIES[pick]
    entity = copy.deepcopy(entity)
    path = data_.draw(st.sampled_from(_paths(entity)))
    target = entity
    for step in path[:-1]:
        target = target[step]
    if data_.draw(st.booleans()) and isinstance(target, dict):
        del target[path[-1]]
    else:
        target[path[-1]] = junk
    raw = _try_encode(entity)
    if raw is not None:
        _ends_well(collection, raw)


_AMOUNT = st.integers(0, 4).flatmap(lambda p: st.decimals(min_value=-10**15, max_value=10**15, places=p))


@_SETTINGS
@given(total=_AMOUNT, net=_AMOUNT, tax=_AMOUNT, balance=_AMOUNT, unit=_AMOUNT, quantity=_AMOUNT)
def test_an_invoice_keeps_every_amount_digit_for_digit(total: Decimal, net: Decimal, tax: Decimal,
                                                      balance: Decimal, unit: Decimal,
                                                      quantity: Decimal) -> None:
    entity = {**samples["invoices"], "balance": balance,
              "amount": {"net_amount": net, "tax_amount": tax, "total_amount": total, "currency": "NZD"},
              "lines": [{"quantity": quantity, "unit_price": {"net_amount": unit}}]}
    ev = _ends_well("invoices", _encode.encode(entity))
    assert ev is not None
    body = json.loads(ev.data)
    assert [body["total"], body["net"], body["tax"], body["unpaid"]] == [str(total), str(net), str(tax),
                                                                         str(balance)]
    assert [body["lines"][0]["quantity"], body["lines"][0]["unit_price"]] == [str(quantity), str(unit)]
