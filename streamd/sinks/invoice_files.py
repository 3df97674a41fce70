"""`format = "invoice-xml"` (the SFTP sink's default): the documents an ERP books of
HORISEN's invoices, one XML file each (docs/sinks/sftp.md).

For each `invoice` event it decides which documents it makes (`documents`: nothing for a
draft, an issue when it becomes bookable, a correction, a cancellation, with `payments`
a payment document), renders each as `docs/horisen-invoice.xsd` XML (`invoice_xml`) and
names it from the `filename` template (`{tenant}-{number}_r{revision}_{op}.xml`). An
invoice's documents form one chain: they go in order. What went for each invoice is
remembered (`ledger`) and committed with the sink's offset, so a batch delivered again
after a crash is decided again the same way: the same documents, under the same names.
A file already at a name is the same document when its root's `documentId` says so.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import msgspec

from ..errors import Permanent, Rejected, SinkStateUnreadable
from ..metrics import Metrics
from ..model import Invoice
from ..model.check import checked
from ..model.fields import DECODE_ERRORS
from ..store import FeedEvent, SinkState
from . import invoice_xml
from .base import StateLoader
from .documents import DOCUMENT_OPS, Document, History, decide, state_key
from .file_format import FileFormat, OutFile, Plan
from .filenames import Template
from .ledger import Ledger

log = logging.getLogger("streamd.sink")

FIELDS = ("tenant", "number", "documentNumber", "key", "id", "seq", "source", "op", "revision", "issued")
#: One of these tells one invoice's file from another's; a template without any would
#: give every invoice of a tenant (or of a day) one name.
DISTINCT = ("number", "documentNumber", "key", "id", "seq")
#: One of these tells an invoice's documents apart ({op} only with {id} or {seq}: one
#: event may make an issue and a payment).
PER_DOCUMENT = ("revision",)
FILENAME = "{tenant}-{number}_r{revision}_{op}.xml"
#: Bytes of an existing file read to find its root's attributes.
HEAD = 4096


def template_problem(template: str) -> str | None:
    """Why a `filename` template cannot be used, or None."""
    parsed = Template(template, FIELDS)
    if parsed.problem:
        return parsed.problem
    used = {f.name for f in parsed.fields}
    if not used & set(DISTINCT):
        return ("needs one of " + ", ".join("{" + f + "}" for f in DISTINCT)
                + ", or two invoices could get one name")
    if not used & set(PER_DOCUMENT) and not ("op" in used and used & {"id", "seq"}):
        return ("needs {revision} (or {op} with {id} or {seq}), or an invoice's documents (its "
                "corrections, cancellation, payments) could get one name")
    try:
        parsed.render(_SAMPLE)
    except (ValueError, TypeError) as exc:
        return f"cannot be rendered ({exc})"
    return None


_SAMPLE: dict[str, Any] = {
    "tenant": "acme", "number": "INV-1", "documentNumber": "INV-1", "key": "k1", "id": "0" * 32,
    "seq": 1, "source": "horisen", "op": "issue", "revision": 1, "issued": "2026-01-01",
}


def file_name(template: str | Template, event: FeedEvent, invoice: Invoice, doc: Document) -> str:
    # An invoice without a number is named by its key: an empty {number} would give every
    # such invoice of a tenant one name.
    number = invoice.number or event.key
    parsed = template if isinstance(template, Template) else Template(template, FIELDS)
    return parsed.render({
        "tenant": event.tenant, "number": number, "documentNumber": number, "key": event.key,
        "id": event.id, "seq": event.seq, "source": event.source, "op": doc.op,
        "revision": doc.revision, "issued": invoice.issued.isoformat() if invoice.issued else ""})


class InvoiceDocuments(FileFormat):
    FIELDS = FIELDS
    DISTINCT = DISTINCT
    FILENAME = FILENAME

    def __init__(self, sink: str, filename: str, *, payments: bool, capacity: int) -> None:
        self.sink = sink
        self.payments = payments
        self._template = Template(filename, FIELDS)
        self._ledger = Ledger(capacity)
        self._written: dict[str, Any] = {}  # documents written, by op (the metric's series)

    @classmethod
    def template_problem(cls, template: str) -> str | None:
        return template_problem(template)

    def attach_metrics(self, metrics: Metrics) -> None:
        self._written = {op: metrics.sink_sftp_documents.labels(self.sink, op) for op in DOCUMENT_OPS}

    def attach_state(self, load: StateLoader) -> None:
        self._ledger.attach(load)

    def take_state(self) -> list[SinkState]:
        return self._ledger.take()

    def _invoice(self, event: FeedEvent) -> Invoice:
        """The invoice an event shows (a deleted one: cancelled); `Permanent` for anything else."""
        where = f"event {event.id} (seq {event.seq})"
        if event.entity != "invoice":
            raise Permanent(f"{where} is a {event.entity}, not an invoice")
        try:
            # The feed's checks again: an event appended before they bounded amounts could
            # hold `1E-999999999`, a billion zeros when written out.
            invoice: Invoice = checked(msgspec.json.decode(event.data, type=Invoice))
        except Rejected as exc:
            raise Permanent(f"{where} holds no usable invoice: {exc.reason}") from None
        except (*DECODE_ERRORS, ValueError, TypeError) as exc:
            raise Permanent(f"{where} holds no usable invoice: {exc}") from None
        if event.op == "deleted":
            invoice = msgspec.structs.replace(invoice, status="cancelled")
        return invoice

    def _file(self, event: FeedEvent, invoice: Invoice, doc: Document) -> OutFile:
        try:
            data = invoice_xml.render(event, invoice, doc)
            name = file_name(self._template, event, invoice, doc)
        except (ValueError, TypeError) as exc:
            raise Permanent(f"event {event.id} (seq {event.seq}) holds no usable invoice: {exc}") from None
        return OutFile(name, event, doc.document_id, f"document {doc.document_id}", data, doc.op)

    async def plan(self, events: Sequence[FeedEvent]) -> Plan:
        """Each event's documents, decided in feed order against what went before: each
        invoice's files in the order they must go, and its new history once they went."""
        shown = [(event, self._invoice(event)) for event in events]
        keys = [state_key(e.provider, e.tenant, e.key) for e, _ in shown]
        try:
            before = await self._ledger.histories(keys)
        except SinkStateUnreadable as exc:
            raise Permanent(str(exc)) from None
        changed: dict[str, History] = {}
        chains: dict[str, list[OutFile]] = {}
        for key, (event, invoice) in zip(keys, shown, strict=True):
            history = changed.get(key) or before[key]
            after, docs = decide(history, seq=event.seq, event_id=event.id, invoice=invoice,
                                 payments=self.payments)
            if after is history:
                log.info("sink %s: event %s (seq %d) is older than what the sink took of invoice %s "
                         "(seq %d): nothing to write", self.sink, event.id, event.seq, event.key,
                         history.seq)
                continue
            changed[key] = after
            chains.setdefault(key, []).extend(self._file(event, invoice, doc) for doc in docs)
        return Plan([chain for chain in chains.values() if chain], lambda: self._ledger.commit(changed))

    def head_size(self, f: OutFile) -> int:
        return HEAD

    def held(self, head: bytes, f: OutFile) -> str | None:
        root = invoice_xml.root_of(head)
        if root is None:
            return "a file streamd did not write"
        if root.document_id == f.identity:
            return None
        return f"document {root.document_id or '(schema 1)'} of event {root.event_id}"

    def written(self, f: OutFile) -> None:
        if f.kind in self._written:
            self._written[f.kind].inc()
