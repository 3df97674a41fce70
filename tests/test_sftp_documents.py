"""The documents an ERP gets for an invoice's events (`sinks.documents`): pure, invoices in,
documents out. What the SFTP sink writes of them is in test_sftp_lifecycle.py."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from msgspec.structs import replace

from streamd.model import Invoice, InvoiceLine, PartyRef
from streamd.sinks.documents import BOOKABLE, History, decide

from .sftp_server import invoice

OPEN = invoice(1, traffic=[])


def run(*states: Invoice, payments: bool = False, start: History | None = None) -> list[list[str]]:
    """Feed the states as events seq 1, 2, …: for each, its documents as "op rN [<supersedes-op>]"."""
    history = start or History()
    out: list[list[str]] = []
    ops: dict[str, str] = {}
    for seq, inv in enumerate(states, 1):
        history, docs = decide(history, seq=seq, event_id=f"e{seq}", invoice=inv, payments=payments)
        out.append([f"{d.op} r{d.revision}" + (f" <{ops[d.supersedes]}" if d.supersedes else "")
                    for d in docs])
        for d in docs:
            ops[d.document_id] = f"{d.op} r{d.revision}"
    return out


def test_nothing_goes_while_a_draft_then_an_issue_when_it_is_bookable() -> None:
    draft = replace(OPEN, status="draft")
    assert run(draft, replace(draft, due=date(2026, 4, 30)), OPEN) == [[], [], ["issue r1"]]


@pytest.mark.parametrize("status", ["draft", "unknown", "cancelled"])
def test_a_status_that_is_not_bookable_makes_no_document(status: str) -> None:
    assert run(replace(OPEN, status=status)) == [[]]
    assert status not in BOOKABLE


@pytest.mark.parametrize("what, fields", [
    ("a moved due date", {"due": date(2026, 4, 13)}),
    ("VAT corrected, total unchanged", {"net": Decimal("107.70"), "tax": Decimal("0")}),
    ("another customer", {"party": PartyRef(key="c-18")}),
    ("a line's quantity", {"lines": [InvoiceLine(quantity=Decimal("2"))]}),
    ("renumbered", {"number": "HZ-2026-9999"}),
    ("another currency", {"currency": "CHF"}),
    ("the domestic total", {"converted_currency": "CHF", "converted_total": Decimal("1")}),
    ("the service period", {"period_start": date(2026, 1, 1)}),
    ("a credit note after all", {"kind": "credit_note"}),
])
def test_a_correction_supersedes_what_went_before(what: str, fields: dict[str, Any]) -> None:
    assert run(OPEN, replace(OPEN, **fields)) == [["issue r1"], ["correction r2 <issue r1"]]


@pytest.mark.parametrize("what, fields", [
    ("HORISEN's own status (archived)", {"provider_status": "archived/open"}),
    ("the customer's master data", {"party": replace(OPEN.party, name="Acme AG", vat_number="DE1",
                                                      number="e-17")}),
    ("traffic reports", {"traffic": invoice(1).traffic, "traffic_missing": True}),
    ("an amount's spelling", {"total": Decimal("108.700")}),
    ("its stamps", {"updated_at": None}),
])
def test_what_is_not_booked_is_no_correction(what: str, fields: dict[str, Any]) -> None:
    assert run(OPEN, replace(OPEN, **fields)) == [["issue r1"], []]


def test_payments_make_documents_only_when_asked_for() -> None:
    part = replace(OPEN, status="partially_paid", unpaid=Decimal("50.00"), paid_amount=Decimal("58.70"))
    paid = replace(OPEN, status="paid", unpaid=Decimal("0"), paid_amount=OPEN.total, paid=date(2026, 3, 9))
    assert run(OPEN, part, paid) == [["issue r1"], [], []]
    assert run(OPEN, part, paid, part, payments=True) == [
        ["issue r1"], ["payment r2"], ["payment r3 <payment r2"], ["payment r4 <payment r3"]]
    # Seen for the first time paid: the issue, then what is paid.
    assert run(paid, payments=True) == [["issue r1", "payment r2"]]
    # A correction while being paid: both, in that order.
    assert run(OPEN, replace(part, due=date(2026, 5, 1)), payments=True) == [
        ["issue r1"], ["correction r2 <issue r1", "payment r3"]]
    # What is unpaid moves with a corrected total: that is the correction's, not a payment.
    assert run(OPEN, replace(OPEN, total=Decimal("200"), unpaid=Decimal("200")), payments=True) == [
        ["issue r1"], ["correction r2 <issue r1"]]


def test_a_cancellation_supersedes_the_last_booking_and_an_issue_undoes_it() -> None:
    cancelled = replace(OPEN, status="cancelled")
    assert run(OPEN, replace(OPEN, due=date(2026, 5, 1)), cancelled, cancelled, OPEN) == [
        ["issue r1"], ["correction r2 <issue r1"], ["cancellation r3 <correction r2"], [],
        ["issue r4 <cancellation r3"]]


def test_a_draft_again_after_its_issue_makes_nothing_until_it_is_bookable_again() -> None:
    draft = replace(OPEN, status="draft", due=date(2026, 6, 1))
    assert run(OPEN, draft, replace(draft, status="open")) == [
        ["issue r1"], [], ["correction r2 <issue r1"]]


def test_an_event_taken_already_is_nothing_and_ids_are_the_same_when_decided_again() -> None:
    history, docs = decide(History(), seq=5, event_id="abc", invoice=OPEN, payments=False)
    again, nothing = decide(history, seq=5, event_id="abc", invoice=OPEN, payments=False)
    older, none = decide(history, seq=3, event_id="old", invoice=replace(OPEN, status="cancelled"),
                         payments=False)
    assert nothing == none == [] and again is history and older is history
    (doc,) = docs
    assert (doc.document_id, doc.revision, doc.seq) == ("abc-issue", 1, 5)
    assert decide(History(), seq=5, event_id="abc", invoice=OPEN, payments=False)[1] == docs


def test_a_history_reads_back_what_it_wrote() -> None:
    history = History()
    states = [OPEN, replace(OPEN, due=date(2026, 5, 1)), replace(OPEN, status="cancelled")]
    for seq, inv in enumerate(states, 1):
        history, _ = decide(history, seq=seq, event_id=f"e{seq}", invoice=inv, payments=True)
    assert History.decode(history.seq, history.encode()) == history
    assert [d.op for d in history.documents] == ["issue", "correction", "cancellation"]
    for bad in (b"{}", b'[[1, 1, "replace", "x", null, "c", "p"]]', b"[[1]]", b"nope"):
        with pytest.raises(ValueError):
            History.decode(1, bad)
