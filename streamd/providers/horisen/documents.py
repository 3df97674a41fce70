"""The simulated HORISEN's finance documents: the history (`records.py`, a pure function
of the knobs for a given `today`), the changes a platform's users make between polls
(`mutate`, `change`), and what the API's listings read, each made once until the next
change: the documents sorted, a listing's filtered documents, each document's and each
traffic-report answer's JSON. The HTTP side, the token endpoint and the API's checks,
is `simulator.py`; this is the data behind it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Protocol

import msgspec

from . import records
from .records import STAMP


class Knobs(Protocol):
    """What of the simulator's knobs (`simulator.Knobs`) the documents read: the history's
    shape, and what `mutate` reads at each call (they may change while serving)."""

    seed: int
    partners: int
    today: date | None
    days: int
    documents_per_day: int
    paid_ratio: float
    payment_moves: tuple[str, ...]


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


_LISTINGS_KEPT = 64  # filtered listings kept until a change (see Documents._listed)
#: Amounts as JSON numbers digit for digit (`1234.50`), as the API writes them.
_enc = msgspec.json.Encoder(decimal_format="number")


def encode(value: Any) -> bytes:
    return _enc.encode(value)


@dataclass(frozen=True)
class Mutation:
    created: list[int] = field(default_factory=list)
    paid: list[int] = field(default_factory=list)
    part_paid: list[int] = field(default_factory=list)
    drafted: list[int] = field(default_factory=list)
    approved: list[int] = field(default_factory=list)
    corrected: dict[int, str] = field(default_factory=dict)  # id -> records.CORRECTIONS kind
    cancelled: list[int] = field(default_factory=list)


class Documents:
    """The documents, by id; see the module docstring."""

    def __init__(self, knobs: Knobs, now: datetime) -> None:
        self.knobs = knobs
        self._records = records.Records(knobs.seed, knobs.partners)
        self.today = knobs.today or now.date()
        end = datetime(self.today.year, self.today.month, self.today.day, 23, 59, 59)
        horizon = end if self.today > now.date() else min(now, end)  # no stamp in the future
        history = self._records.history(self.today, knobs.days, knobs.documents_per_day,
                                        knobs.paid_ratio, horizon)
        self._docs: dict[int, dict[str, Any]] = {doc["id"]: doc for doc in history}
        self._next_id = len(history) + 1
        self._bytes: dict[int, bytes] = {}  # id -> encoded document, dropped when it changes
        self._sorted: dict[str, list[dict[str, Any]]] = {}  # sort -> all documents, until a change
        # (sort, filters) -> the documents a listing shows, until a change: each page of a
        # listing would otherwise test every document again (what an index spares a real API).
        self._listed: dict[tuple[str, tuple[tuple[str, str], ...]], list[dict[str, Any]]] = {}
        self._reports: dict[int, bytes] = {}  # id -> encoded traffic-report answer
        self._mutations = 0

    def __contains__(self, doc_id: int) -> bool:
        return doc_id in self._docs

    def snapshot(self) -> dict[int, dict[str, Any]]:
        """The current documents by id, amounts as Decimal. `mutate()` replaces the dict of a
        document it changes: a snapshot taken before keeps the old state."""
        return dict(self._docs)

    def reports(self, invoice_id: int) -> list[dict[str, Any]]:
        """The traffic-report rows of a document (whether or not it is in `missing_reports`);
        KeyError for an unknown id."""
        return self._records.reports(self._docs[invoice_id])

    def mutate(self, new: int = 0, paid: int = 0, *, part_paid: int = 0, drafts: int = 0, approve: int = 0,
               correct: int = 0, cancel: int = 0) -> Mutation:
        """Between two polls, stamped now: `new` documents dated today (`Knobs.today` if set,
        statuses drawn as the history's) and `drafts` more as drafts; `approve` drafts
        approved; `correct` approved documents corrected (`records.correct`, a kind drawn);
        `cancel` unpaid approved ones cancelled; `paid` open approved ones paid in full and
        `part_paid` others half paid. Which ones is a function of the seed and the number of
        calls so far; ValueError (and no change) if too few qualify."""
        counts = (new, paid, part_paid, drafts, approve, correct, cancel)
        if any(n < 0 for n in counts):
            raise ValueError("the arguments are counts")
        docs = self._docs.values()
        open_ids = [d["id"] for d in docs if d["status"] == "approved" and d["paymentStatus"] == "open"]
        unpaid = [i for i in open_ids if self._docs[i]["totalPaid"] == 0]
        draft_ids = [d["id"] for d in docs if d["status"] == "draft"]
        approved = [d["id"] for d in docs if d["status"] == "approved"]
        for want, have, what in ((paid + part_paid, open_ids, "open"), (cancel, unpaid, "unpaid"),
                                 (approve, draft_ids, "draft"), (correct, approved, "approved")):
            if want > len(have):
                raise ValueError(f"cannot change {want} documents: {len(have)} are {what}")
        self._mutations += 1
        rng = random.Random(f"{self.knobs.seed}/mutation/{self._mutations}")
        now = utcnow()
        moves = self.knobs.payment_moves
        out = Mutation()
        chosen = rng.sample(open_ids, paid + part_paid)
        for i in sorted(chosen[:paid]):
            self._docs[i] = records.pay(self._docs[i], now, moves)
            out.paid.append(i)
        for i in sorted(chosen[paid:]):
            self._docs[i] = records.pay_part(self._docs[i], now, moves)
            out.part_paid.append(i)
        for i in sorted(rng.sample(draft_ids, approve)):
            self._docs[i] = {**self._docs[i], "status": "approved", "statusDt": records.stamp(now)}
            out.approved.append(i)
        for i in sorted(rng.sample(approved, correct)):
            kind = rng.choice(records.CORRECTIONS)
            rate = self._records.partners[self._docs[i]["bizPartnerId"] - 1].vat_rate
            self._docs[i] = records.correct(self._docs[i], kind, now, rate)
            out.corrected[i] = kind
        for i in sorted(rng.sample([i for i in unpaid if i not in chosen], min(cancel, len(unpaid)))):
            self._docs[i] = {**self._docs[i], "status": "canceled", "statusDt": records.stamp(now)}
            out.cancelled.append(i)
        for status, n, into in ((None, new, out.created), ("draft", drafts, out.drafted)):
            for _ in range(n):
                i, self._next_id = self._next_id, self._next_id + 1
                self._docs[i] = self._records.document(rng, i, self.knobs.today or now.date(), now, 0.0, now,
                                                       status)
                into.append(i)
        for i in (*out.paid, *out.part_paid, *out.approved, *out.corrected, *out.cancelled):
            self._bytes.pop(i, None)
            self._reports.pop(i, None)
        self._sorted.clear()
        self._listed.clear()
        return out

    def change(self, doc_id: int, *, stamps: tuple[str, ...] = ("statusDt",), **fields: Any) -> None:
        """Set fields of a document from now on (`None` removes one), moving the `stamps`."""
        doc = {**self._docs[doc_id], **{name: utcnow().strftime(STAMP) for name in stamps}}
        for name, value in fields.items():
            if value is None:
                doc.pop(name, None)
            else:
                doc[name] = value
        self._docs[doc_id] = doc
        self._bytes.pop(doc_id, None)
        self._reports.pop(doc_id, None)
        self._sorted.clear()
        self._listed.clear()

    def report_answer(self, doc_id: int) -> bytes:
        """The traffic-report answer of a document, encoded once until it changes."""
        body = self._reports.get(doc_id)
        if body is None:
            body = self._reports[doc_id] = _enc.encode({"data": self.reports(doc_id)})
        return body

    def encoded(self, doc: dict[str, Any]) -> bytes:
        """A document as the API serves it, encoded once until it changes."""
        data = self._bytes.get(doc["id"])
        if data is None:
            data = self._bytes[doc["id"]] = _enc.encode(doc)
        return data

    def _sorted_by(self, sort: str) -> list[dict[str, Any]]:
        rows = self._sorted.get(sort)
        if rows is None:
            rows = list(self._docs.values())  # id order: ids ascend in insertion order
            for key in reversed(sort.split(",")):  # stable sorts: ties stay in id order
                rows.sort(key=records.sort_key(key.removeprefix("-")), reverse=key.startswith("-"))
            self._sorted[sort] = rows
        return rows

    def listed(self, sort: str, filters: list[tuple[str, str]],
                   tests: list[Callable[[dict[str, Any]], bool]]) -> list[dict[str, Any]]:
        """The documents sorted by `sort` that pass `tests` (the predicates of `filters`)."""
        rows = self._sorted_by(sort)
        if not tests:
            return rows
        key = (sort, tuple(filters))
        listed = self._listed.get(key)
        if listed is None:
            if len(self._listed) >= _LISTINGS_KEPT:  # look-ups by id: one listing each
                self._listed.clear()
            listed = self._listed[key] = [doc for doc in rows if all(test(doc) for test in tests)]
        return listed
