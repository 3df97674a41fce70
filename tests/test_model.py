"""The envelope and the unified model: pure code, tested by feeding it values and bytes."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from streamd.errors import NotAnAmount, Rejected
from streamd.model import (
    ENTITIES,
    Invoice,
    InvoiceLine,
    InvoiceRef,
    Party,
    PaymentRef,
    Record,
    Transaction,
    cloudevent,
    entity_type,
    event_id,
    fields,
    format_time,
    make_event,
    render_line,
)
from streamd.model.canonical import decimal_text
from streamd.model.check import canonical, digest, walked
from streamd.model.envelope import encode_data
from streamd.model.iso4217 import MINOR_UNITS
from streamd.providers.synthetic import normalize, wire

T0 = datetime(2020, 6, 26, 8, 12, 44, 119000, tzinfo=UTC)


def test_event_id_follows_the_documented_derivation() -> None:
    def ns(s: str) -> bytes:
        b = s.encode()
        return b"%d:%s," % (len(b), b)

    expected = hashlib.sha256(b"".join(ns(s) for s in (
        "streamd-event/1", "asteria", "5eafe37d", "invoice", "5ef5adfc", "2020-06-26T08:12:44.119Z",
    ))).digest()[:16].hex()
    assert event_id("asteria", "5eafe37d", "invoice", "5ef5adfc", "2020-06-26T08:12:44.119Z") == expected
    assert len(expected) == 32


def test_event_id_counts_bytes_not_characters_outside_ascii() -> None:
    # `event_id` builds its netstrings as text when they are ASCII; "Åbo AB" is 6
    # characters and 7 bytes, and the derivation is in bytes.
    def ns(s: str) -> bytes:
        b = s.encode()
        return b"%d:%s," % (len(b), b)

    parts = ("asteria", "Åbo AB", "invoice", "ключ-1", "2020-06-26T08:12:44.119Z")
    expected = hashlib.sha256(b"".join(ns(s) for s in ("streamd-event/1", *parts))).digest()[:16].hex()
    assert event_id(*parts) == expected


def test_fields_cannot_bleed_into_each_other() -> None:
    assert event_id("p", "ab", "c", "k", "v") != event_id("p", "a", "bc", "k", "v")


def test_same_change_seen_twice_gets_the_same_id() -> None:
    inv = Invoice(direction="receivable", currency="EUR", total=Decimal("125.00"))
    a = make_event(provider="asteria", source="ws", tenant="t", entity="invoice", op="updated",
                   key="k", time=T0, data=inv, version="2020-06-26T08:12:44.119Z")
    # the same change by webhook, through another configured source, labelled created
    b = make_event(provider="asteria", source="hook", tenant="t", entity="invoice", op="created",
                   key="k", time=T0 + timedelta(seconds=3), data=inv, version="2020-06-26T08:12:44.119Z")
    assert a.id == b.id
    c = make_event(provider="asteria", source="ws", tenant="t", entity="invoice", op="updated",
                   key="k", time=T0, data=inv, version="2020-06-26T08:13:00.000Z")
    assert c.id != a.id


def test_without_a_stamp_the_content_is_the_version() -> None:
    p1 = Party(name="A", roles=["customer"])
    p2 = Party(name="B", roles=["customer"])
    mk = lambda p: make_event(provider="x", source="s", tenant="t", entity="party",  # noqa: E731
                              op="updated", key="k", time=T0, data=p)
    assert mk(p1).id == mk(p1).id
    assert mk(p1).id != mk(p2).id


def test_a_deletion_never_collides_with_an_update_of_the_same_stamp() -> None:
    kw = dict(provider="x", source="s", tenant="t", entity="party", key="k", time=T0, version="v1")
    upd = make_event(op="updated", data=Party(name="A"), **kw)  # type: ignore[arg-type]
    dele = make_event(op="deleted", data=None, **kw)  # type: ignore[arg-type]
    assert upd.id != dele.id
    assert dele.data == b"null"


def test_time_is_rfc3339_utc_with_milliseconds() -> None:
    assert format_time(T0) == "2020-06-26T08:12:44.119Z"
    naive = datetime(2020, 1, 2, 3, 4, 5)
    assert format_time(naive) == "2020-01-02T03:04:05.000Z"
    cet = datetime(2020, 1, 2, 4, 4, 5, tzinfo=__import__("datetime").timezone(timedelta(hours=1)))
    assert format_time(cet) == "2020-01-02T03:04:05.000Z"


def test_the_feed_line_is_cloudevents_with_money_as_strings() -> None:
    inv = Invoice(direction="receivable", currency="SEK", total=Decimal("100.10"),
                  converted_currency="EUR", converted_total=Decimal("9.0000001"))
    ev = make_event(provider="asteria", source="partner-1", tenant="5eafe37d", entity="invoice",
                    op="updated", key="5ef5adfc", time=T0, data=inv, version="v")
    line = render_line(cloudevent(seq=1234, id=ev.id, source=ev.source, provider=ev.provider,
                                  tenant=ev.tenant, entity=ev.entity, op=ev.op, key=ev.key,
                                  time=ev.time, data=ev.data))
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    obj = json.loads(line)
    assert list(obj) == ["specversion", "id", "source", "type", "subject", "time",
                         "datacontenttype", "seq", "provider", "tenant", "entity", "data"]
    assert obj["specversion"] == "1.0"
    assert obj["source"] == "/asteria/partner-1"
    assert obj["type"] == "invoice.updated"
    assert obj["subject"] == "invoice/5ef5adfc"
    assert obj["seq"] == 1234
    assert obj["data"]["total"] == "100.10"
    assert obj["data"]["converted_total"] == "9.0000001"
    # exact decimal round trip, never through a float
    back = msgspec.json.decode(json.dumps(obj["data"]), type=Invoice)
    assert back.converted_total == Decimal("9.0000001")


def test_json_numbers_on_the_wire_become_exact_decimals() -> None:
    # Providers send amounts as JSON numbers ("invoiceTotal": 100). msgspec reads the
    # digits straight into a Decimal: no float ever holds the amount.
    raw = (b'{"tenant":"t","entity":"invoice","op":"created","key":"k","data":{"direction":'
           b'"receivable","currency":"EUR","total":0.30000000000000004,"tax":12345678901234567.89}}')
    ev = normalize.normalize(raw, source="s", received_at=T0)
    data = json.loads(ev.data)
    assert data["total"] == "0.30000000000000004"
    assert data["tax"] == "12345678901234567.89"


def test_currency_must_be_iso_4217() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"direction":"payable","currency":"euro","total":"1"}', type=Invoice)


def test_a_currency_written_as_iso_4217_lists_it_is_taken_as_it_is() -> None:
    # `fields.currency` takes a code found in the list without matching it: every code
    # there must be what the match would have let through, and nothing else is taken so.
    from streamd.model.fields import CURRENCY, MINOR_UNITS, currency
    assert all(CURRENCY.match(code) for code in MINOR_UNITS)
    assert [currency(code, "c") for code in ("NOK", " nok ", "eur")] == ["NOK", "NOK", "EUR"]
    for bad in ("XYZ", "N0K", "EURO", ""):
        if bad:
            with pytest.raises(Rejected, match="c: "):
                currency(bad, "c")
        else:
            assert currency(bad, "c") is None


def test_a_date_read_again_is_the_same_in_its_own_zone_and_a_refusal_is_said_again() -> None:
    # `fields.day` keeps what it read, by value and zone: the zone is part of the answer.
    from zoneinfo import ZoneInfo

    from streamd.model.fields import day
    stamp = "2021-12-24T23:00:00.000Z"  # 25 December in Stockholm, the 24th in New York
    for _ in range(2):
        assert day(stamp, "d", ZoneInfo("Europe/Stockholm")) == date(2021, 12, 25)
        assert day(stamp, "d", ZoneInfo("America/New_York")) == date(2021, 12, 24)
        assert day(stamp, "d", UTC) == date(2021, 12, 24)
    for field in ("due", "paid"):  # kept answers only: each refusal names its own field
        with pytest.raises(Rejected, match=f"^{field}: '2026-02-30' is not a date$"):
            day("2026-02-30", field, UTC)
        with pytest.raises(Rejected, match=f"^{field}: '0001-01-01T00:00:00\\+01:00' is out of range$"):
            day("0001-01-01T00:00:00+01:00", field, UTC)
    assert day("  ", "d", UTC) is None and day(None, "d", UTC) is None


def test_unknown_entities_carry_a_record() -> None:
    assert entity_type("voucher") is Record
    assert set(ENTITIES) == {"party", "invoice", "transaction", "bank_account", "product"}


# ---------------------------------------------------------------- the synthetic normalizer

def test_generated_records_normalize_deterministically() -> None:
    epoch = datetime(2026, 1, 1, tzinfo=UTC)
    now = datetime(2026, 5, 5, tzinfo=UTC)
    for n in range(40):
        raw = wire.record(7, n, ["a", "b"], epoch)
        assert raw == wire.record(7, n, ["a", "b"], epoch)
        ev = normalize.normalize(raw, source="gen", received_at=now)
        assert ev.raw == raw
        assert ev.id == normalize.normalize(raw, source="gen", received_at=now).id
        assert ev.tenant == ("a" if n % 2 == 0 else "b")
    kinds = {normalize.normalize(wire.record(7, n, ["a"], epoch), source="g", received_at=now).type
             for n in range(40)}
    assert kinds == {"party.created", "invoice.created", "invoice.updated", "transaction.created"}


@pytest.mark.parametrize("raw, reason", [
    (b"{not json", "not a synthetic record"),
    (b'{"tenant":"t","entity":"invoice","op":"created","key":"k"}', "needs data"),
    (b'{"tenant":"t","entity":"invoice","op":"created","key":"k","data":{"direction":"receivable",'
     b'"currency":"EUR","total":"12,50"}}', "Invalid decimal"),
    (b'{"tenant":"","entity":"party","op":"created","key":"k","data":{}}', "must not be empty"),
    (b'{"tenant":"t","entity":"party","op":"exploded","key":"k","data":{}}', "Invalid enum value"),
    (b'{"tenant":"t","entity":"party","op":"created","key":"k","data":{},"surprise":1}', "unknown field"),
])
def test_bad_records_are_rejected_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(Rejected) as info:
        normalize.normalize(raw, source="s", received_at=T0)
    assert reason in info.value.reason


def _synthetic(entity: str, data: bytes) -> bytes:
    return (b'{"tenant":"t","entity":"' + entity.encode() + b'","op":"created","key":"k","data":'
            + data + b"}")


@pytest.mark.parametrize("raw, reason", [
    (_synthetic("invoice", b'{"direction":"receivable","currency":"EUR","total":"' + b"9" * 900_000 + b'"}'),
     "invoice k: total: 9999999999999999…99999999 (900000 digits) is out of range "
     "(more than 38 digits before the point)"),
    (_synthetic("invoice", b'{"direction":"receivable","currency":"EUR","total":"1e-999999999"}'),
     "invoice k: total: 1E-999999999 is out of range (more than 38 digits after the point)"),
    (_synthetic("invoice", b'{"direction":"receivable","currency":"EUR","total":"1",'
                           b'"lines":[{"net":"0.' + b"0" * 38 + b'1"}]}'),
     "invoice k: lines[0].net: 1E-39 is out of range (more than 38 digits after the point)"),
    (_synthetic("transaction", b'{"kind":"payment","currency":"EUR","amount":"1E+38"}'),
     "transaction k: amount: 1E+38 is out of range (more than 38 digits before the point)"),
    (_synthetic("invoice", b'{"direction":"receivable","currency":"EUR","total":1e-999999999}'),
     "invoice k: total: 1E-999999999 is out of range"),  # a JSON number, not a string
])
def test_synthetic_amounts_beyond_38_digits_are_refused_naming_the_field(raw: bytes, reason: str) -> None:
    with pytest.raises(Rejected) as info:
        normalize.normalize(raw, source="s", received_at=T0)
    assert info.value.reason.startswith(reason)
    assert len(info.value.reason) < 200, "a reason is logged: never the 900,000 digits"


def test_synthetic_amounts_at_the_bounds_are_kept() -> None:
    total = "9" * 38 + "." + "9" * 38
    ev = normalize.normalize(_synthetic("invoice", b'{"direction":"receivable","currency":"EUR","total":"'
                                        + total.encode() + b'","net":"1E+37"}'), source="s", received_at=T0)
    data = json.loads(ev.data)
    assert (data["total"], data["net"]) == (total, "1" + "0" * 37)


def test_a_deletion_record_needs_no_data() -> None:
    ev = normalize.normalize(b'{"tenant":"t","entity":"party","op":"deleted","key":"k","version":"v9"}',
                             source="s", received_at=T0)
    assert ev.op == "deleted" and ev.data == b"null" and ev.time == format_time(T0)


def test_a_webhook_body_splits_into_records_keeping_each_ones_bytes() -> None:
    body = b'[{"a": 1}, {"b": [2, 3]}]'
    assert normalize.split(body) == [b'{"a": 1}', b'{"b": [2, 3]}']
    assert normalize.split(b'{"a":1}') == [b'{"a":1}']
    with pytest.raises(Rejected):
        normalize.split(b"[1, 2")


# ---------------------------------------------------------------- what make_event lets in

def _invoice_event(**fields: object) -> object:
    inv = Invoice(**{"direction": "receivable", "currency": "EUR", "total": Decimal("1"), **fields})  # type: ignore[arg-type]
    return make_event(provider="x", source="s", tenant="t", entity="invoice", op="created",
                      key="k", time=T0, data=inv, version="v")


@pytest.mark.parametrize("amount", ["NaN", "Infinity", "-Infinity", "sNaN"])
def test_non_finite_amounts_are_rejected(amount: str) -> None:
    with pytest.raises(Rejected, match=r"invoice k: total: .* is not an amount"):
        _invoice_event(total=Decimal(amount))


def test_amounts_never_carry_a_positive_exponent() -> None:
    ev = _invoice_event(total=Decimal("1E+2"), tax=Decimal("2.50"))
    assert json.loads(ev.data)["total"] == "100"  # type: ignore[attr-defined]
    assert json.loads(ev.data)["tax"] == "2.50"  # type: ignore[attr-defined]


def test_an_exponent_too_large_to_write_out_is_rejected_not_a_crash() -> None:
    with pytest.raises(Rejected, match=r"invoice k: total: 1E\+400 is out of range"):
        _invoice_event(total=Decimal("1E+400"))


def test_a_hand_built_entity_is_validated_like_a_decoded_one() -> None:
    with pytest.raises(Rejected, match="currency"):
        _invoice_event(currency="eur")


def test_instants_become_utc_and_floats_decimals() -> None:
    from datetime import timezone

    cet = datetime(2026, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    ev = _invoice_event(created_at=cet, updated_at=datetime(2026, 3, 1, 9, 0))
    data = json.loads(ev.data)  # type: ignore[attr-defined]
    assert data["created_at"] == "2026-03-01T10:00:00Z"
    assert data["updated_at"] == "2026-03-01T09:00:00Z"
    rec = make_event(provider="x", source="s", tenant="t", entity="voucher", op="created", key="v",
                     time=T0, data=Record(attributes={"rate": 0.1, "lines": [{"amount": 19.99}]}))
    attrs = json.loads(rec.data)["attributes"]
    assert attrs == {"rate": "0.1", "lines": [{"amount": "19.99"}]}


def test_entities_ignore_fields_a_newer_streamd_added() -> None:
    newer = b'{"direction":"payable","currency":"SEK","total":"5","added_in_v9":"x"}'
    assert msgspec.json.decode(newer, type=Invoice).total == Decimal("5")


def test_the_dedupe_bucket_depends_on_the_version_alone() -> None:
    from streamd.model import dedupe_bucket

    assert dedupe_bucket("2020-06-26T08:12:44.119Z") == "2020-06-26T08:12:44"
    assert dedupe_bucket("deleted:2020-06-26T08:12:44.119Z") == "2020-06-26T08:12:44"
    assert dedupe_bucket("deleted:") == ""
    assert dedupe_bucket("sha256:0123abcd") == ""
    assert dedupe_bucket("1593159164119") == "1593159164119"
    # the same change seen twice: same id, same version, same bucket
    a = _invoice_event()
    b = _invoice_event()
    assert (a.id, a.version) == (b.id, b.version)  # type: ignore[attr-defined]


def test_two_changes_with_the_same_stamp_are_two_events() -> None:
    # Provider stamps have millisecond precision: a create and an update (or two updates)
    # within one millisecond share updatedAt. Their content differs, so must their ids.
    kw = dict(provider="asteria", source="s", tenant="t", entity="party", key="k", time=T0,
              version="2020-06-26T08:12:44.119Z")
    created = make_event(op="created", data=Party(name="Old name"), **kw)  # type: ignore[arg-type]
    updated = make_event(op="updated", data=Party(name="New name"), **kw)  # type: ignore[arg-type]
    assert created.id != updated.id
    again = make_event(op="updated", data=Party(name="New name"), **kw)  # type: ignore[arg-type]
    assert again.id == updated.id, "the same change seen twice is still one id"


# ---------------------------------------------------------------- issue 14: one model, one rule

def test_fields_added_to_the_invoice_keep_the_content_of_events_that_lack_them() -> None:
    """`forecast`, `active` and `credits` came after events were already hashed: an invoice a
    provider sends without them encodes to the same bytes as before, so its content hash,
    and the id of a record that did not change, stay what they were."""
    inv = Invoice(direction="receivable", currency="EUR", total=Decimal("125.10"))
    before = (b'{"kind":"invoice","direction":"receivable","number":null,"party":null,"issued":null,'
              b'"due":null,"paid":null,"status":"unknown","provider_status":null,"currency":"EUR",'
              b'"net":null,"tax":null,"total":"125.10","unpaid":null,"converted_currency":null,'
              b'"converted_net":null,"converted_tax":null,"converted_total":null,"conversion_rate":null,'
              b'"description":null,"lines":[],"payments":[],"traffic":[],"created_at":null,"updated_at":null}')
    assert encode_data(inv) == before
    marked = msgspec.structs.replace(inv, forecast=True, active=False, credits=[InvoiceRef(number="7")])
    assert encode_data(marked) == before[:-1] + (
        b',"forecast":true,"active":false,"credits":[{"key":null,"number":"7"}]}')
    assert msgspec.json.decode(before, type=Invoice).forecast is msgspec.UNSET


@pytest.mark.parametrize("entity", [
    Invoice(direction="receivable", currency="XYZ", total=Decimal(1)),
    Invoice(direction="receivable", currency="EUR", total=Decimal(1),
            payments=[PaymentRef(amount=Decimal(1), currency="ABC")]),
    Transaction(kind="payment", amount=Decimal(1), currency="QQQ"),
])
def test_every_entity_refuses_a_currency_that_is_not_iso_4217(entity: Any) -> None:
    """`XYZ` fits `^[A-Z]{3}$`; however a normalizer built the entity, `make_event` refuses it."""
    with pytest.raises(Rejected, match="is not an ISO 4217 currency code"):
        make_event(provider="synthetic", source="s", tenant="t", entity="x", op="created", key="k",
                   time=T0, data=entity)


def test_the_iso_4217_table_has_minor_units_and_refuses_unknown_codes() -> None:
    assert (MINOR_UNITS["EUR"], MINOR_UNITS["JPY"], MINOR_UNITS["BHD"], MINOR_UNITS["XAU"]) == (2, 0, 3, None)
    assert fields.currency(" sek ", "currency") == "SEK"
    for bad in ("XYZ", "HRK"):  # unknown; withdrawn in 2023 (List Three, not List One)
        with pytest.raises(Rejected, match=f"currency: '{bad}' is not an ISO 4217 currency code"):
            fields.currency(bad, "currency")


def test_an_unknown_tenant_is_null_in_the_feed() -> None:
    line = render_line(cloudevent(seq=1, id="0" * 32, source="gw", provider="asteria", tenant="",
                                  entity="party", op="deleted", key="k", time="t", data=b"null"))
    assert json.loads(line)["tenant"] is None
# ---------------------------------------------------------------- versions: values, not bytes

MODEL_MD = Path(__file__).resolve().parent.parent / "docs" / "model.md"


def test_the_worked_example_in_model_md_is_what_the_code_does() -> None:
    """Every line of docs/model.md's worked example, recomputed: the doc cannot go stale."""
    doc = MODEL_MD.read_text()
    section = doc[doc.index("### Worked example"):doc.index("### What that means")]
    block = re.search(r"```text\n(.*?)```", section, re.S)
    assert block, "the worked example's text block"
    lines = dict(line.split(":", 1) for line in block.group(1).splitlines())
    shown = {k.strip(): v.strip() for k, v in lines.items()}
    invoice = msgspec.json.decode(shown["entity"], type=Invoice)
    assert canonical(invoice).decode() == shown["canonical"]
    assert digest(invoice) == shown["digest"]
    ev = make_event(provider="synthetic", source="demo", tenant="acme", entity="invoice", op="created",
                    key="inv-000000", time=T0, data=invoice, version=shown["stamp"])
    assert ev.version == shown["version"]
    hashed = b"".join(b"%d:%s," % (len(p.encode()), p.encode()) for p in (
        "streamd-event/1", "synthetic", "acme", "invoice", "inv-000000", ev.version))
    assert hashed.decode() == shown["hashed"]
    assert ev.id == shown["id"] == hashlib.sha256(hashed).digest()[:16].hex()
    # The console line beside it, and the unstamped and deleted versions of the same invoice.
    console = re.search(r"\$ python -c '(.*)'\n([0-9a-f]{32})\n", section)
    assert console and console.group(2) == ev.id and ev.version in console.group(1)
    unstamped = make_event(provider="synthetic", source="demo", tenant="acme", entity="invoice",
                           op="created", key="inv-1", time=T0, data=invoice)
    assert f"`{unstamped.version}` and id `{unstamped.id}`" in " ".join(section.split())
    deleted = make_event(provider="synthetic", source="demo", tenant="acme", entity="invoice",
                         op="deleted", key="inv-1", time=T0, data=None)
    assert f"`{deleted.version}` and id `{deleted.id}`" in " ".join(section.split())


def test_a_field_the_model_gains_at_its_default_changes_no_id() -> None:
    class Grown(Invoice, frozen=True, kw_only=True):  # the model, one release later
        billed_messages: list[str] = []
        channel: str | None = None

    fields = {"direction": "receivable", "currency": "SEK", "total": Decimal("100"), "number": "4711",
              "updated_at": T0}
    before, after = Invoice(**fields), Grown(**fields)  # type: ignore[arg-type]
    assert encode_data(before) != encode_data(after)  # other bytes in the feed...
    assert digest(before) == digest(after)  # ...the same record
    kw = dict(provider="asteria", source="s", tenant="t", entity="invoice", op="updated", key="k",
              time=T0, version="2020-06-26T08:12:44.119Z")
    assert make_event(data=before, **kw).id == make_event(data=after, **kw).id  # type: ignore[arg-type]
    assert digest(Grown(**fields, channel="sms")) != digest(before)  # type: ignore[arg-type]


@pytest.mark.parametrize("a, b", [
    ("2020-06-26T08:12:44Z", "2020-06-26T08:12:44.000Z"),
    ("2020-06-26T08:12:44.119Z", "2020-06-26T10:12:44.1190+02:00"),
    ("2020-06-26T08:12:44", "2020-06-26 08:12:44Z"),  # no offset: UTC
])
def test_a_stamp_is_the_instant_it_names(a: str, b: str) -> None:
    inv = Invoice(direction="receivable", currency="EUR", total=Decimal("1"))
    kw = dict(provider="connec", source="s", tenant="t", entity="invoice", op="updated", key="k",
              time=T0, data=inv)
    assert make_event(version=a, **kw).id == make_event(version=b, **kw).id  # type: ignore[arg-type]
    assert make_event(version="42", **kw).version.startswith("42#")  # type: ignore[arg-type]
    gone = {**kw, "op": "deleted", "data": None}
    assert make_event(version=a, **gone).version == make_event(version=b, **gone).version  # type: ignore[arg-type]


@pytest.mark.parametrize("a, b", [("100.0", "100"), ("125.10", "125.1"), ("1E+2", "100"),
                                  ("-0.00", "0"), ("0.000", "0E-7")])
def test_an_amount_is_its_value(a: str, b: str) -> None:
    one = Invoice(direction="receivable", currency="EUR", total=Decimal(a))
    other = Invoice(direction="receivable", currency="EUR", total=Decimal(b))
    assert digest(one) == digest(other)
    assert digest(one) != digest(Invoice(direction="receivable", currency="EUR", total=Decimal("100.01")))
    # 38 digits either side are written out in full, never rounded to a context's 28.
    wide = Decimal("1" * 38 + "." + "0" * 37 + "1")
    assert decimal_text(wide) == str(wide) and decimal_text(wide) != decimal_text(wide + Decimal("1E-38"))


def test_one_walk_checks_an_entity_and_writes_its_values_canonically() -> None:
    """`walked` fixes what `check` fixes and writes what `canonical` writes, in one pass:
    the fixed values are the ones written, however deep, and a refusal names its path."""
    plus2 = timezone(timedelta(hours=2))
    record = Record(name="v", updated_at=datetime(2020, 6, 26, 10, 12, 44, 119000, tzinfo=plus2), attributes={
        "n": 100, "f": 0.1, "z": Decimal("-0.00"), "e": Decimal("1E+2"), "d": date(2021, 12, 25),
        "when": [datetime(2020, 6, 26, 8, 0)], "deep": {"x": [{"y": Decimal("125.10")}]}, "t": True})
    fixed, canon = walked(record)
    assert fixed.updated_at == T0 and fixed.updated_at.utcoffset() == timedelta(0)
    assert fixed.attributes == {"n": Decimal(100), "f": Decimal("0.1"), "z": Decimal("0.00"),
                                "e": Decimal(100), "d": date(2021, 12, 25),
                                "when": [datetime(2020, 6, 26, 8, 0, tzinfo=UTC)],
                                "deep": {"x": [{"y": Decimal("125.10")}]}, "t": True}
    assert json.loads(canon) == {
        "name": "v", "updated_at": "2020-06-26T08:12:44.119000Z",
        "attributes": {"n": "100", "f": "0.1", "z": "0", "e": "100", "d": "2021-12-25",
                       "when": ["2020-06-26T08:00:00Z"], "deep": {"x": [{"y": "125.1"}]}, "t": True}}
    assert canon == canonical(fixed) and digest(record) == hashlib.sha256(canon).hexdigest()
    assert walked(fixed)[0] is fixed  # nothing left to fix: the same object
    with pytest.raises(Rejected, match=r"^attributes\.deep\.x\[0\]\.y: NaN is not an amount$"):
        walked(Record(attributes={"deep": {"x": [{"y": Decimal("NaN")}]}}))
    with pytest.raises(Rejected, match=r"^lines\[1\]\.total: 1E\+400 is out of range"):
        walked(Invoice(direction="receivable", currency="EUR", total=Decimal(1),
                       lines=[InvoiceLine(total=Decimal(1)), InvoiceLine(total=Decimal("1E+400"))]))


@pytest.mark.parametrize("text", [
    "0", "-0", "0.00", "-0.00", "1", "-1", "125.00", "-100.10", "10", "1E+2", "-0E+2", "1E-7",
    "1E-38", "1E-39", "0E-39", "0E-38", "-5E+37", "5E+38", "1" * 38, "1" * 39, "-" + "1" * 38,
    "-" + "1" * 39, "0." + "0" * 37 + "1", "0." + "0" * 38 + "1", "1." + "0" * 38, "1." + "0" * 39,
    "NaN", "-Infinity", "sNaN", "1E+999999", "1E-999999999"])
def test_the_walk_takes_an_amount_as_bounded_and_writes_it_as_decimal_text(text: str) -> None:
    """The walk reads an amount's text once for the bound and the canonical form: the same
    value, sign and refusal as `fields.bounded`, the same text as `decimal_text`."""
    value = Decimal(text)
    try:
        fixed = fields.bounded(value)
    except NotAnAmount as exc:
        with pytest.raises(Rejected, match=rf"^attributes\.total: {re.escape(str(exc))}$"):
            walked(Record(attributes={"total": value}))
        return
    got, canon = walked(Record(attributes={"total": value}))
    amount = got.attributes["total"]
    assert str(amount) == str(fixed) and amount.is_signed() == fixed.is_signed()
    assert json.loads(canon)["attributes"]["total"] == decimal_text(fixed)
