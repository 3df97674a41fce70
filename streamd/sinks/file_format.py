"""What the SFTP sink writes, apart from how it writes it: a `FileFormat` turns a batch of
feed events into files (names, bytes, the order they must go in) and tells from the head
of a file already at a name whether it is the same file. The transport (`sftp`) connects,
writes each file under a temporary name, renames it into place, skips a file that is
already there and the same, and refuses one that is not.

The formats (`format = ...` in the sink's table, docs/sinks/sftp.md):

- `invoice_files.InvoiceDocuments` (`"invoice-xml"`, the default): the documents an ERP
  books of HORISEN's invoices, as XML, one file per document.
- `jsonl_files.JsonLines` (`"jsonl"`): each batch's feed lines, one file per batch.

A format decides on copies and changes nothing it keeps until the transport says every
file went (`Plan.done`), so a delivery that fails changes nothing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..metrics import Metrics
from ..store import FeedEvent, SinkState
from .base import StateLoader


@dataclass(frozen=True)
class OutFile:
    """One file to write."""

    name: str
    event: FeedEvent  # the event refused (to dead letters) when the name holds another file
    identity: str  # unique to what it holds: a conflict is counted once per identity
    title: str  # what it is, for a log line: "document 3f…", "events 12 to 40"
    data: bytes
    kind: str = ""  # counted by the format when written (an invoice document's op)


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Plan:
    """A batch's files, in chains: a chain's files go in order, one after the other; chains
    go concurrently. `done` is called once every file went (written, or found there)."""

    chains: list[list[OutFile]]
    done: Callable[[], None] = field(default=_nothing)


class FileFormat(ABC):
    #: The `filename` template's fields, the ones of which one must be in a template (or
    #: two batches' files could get one name), and the default template.
    FIELDS: tuple[str, ...]
    DISTINCT: tuple[str, ...]
    FILENAME: str

    #: A redelivered batch must hold the events it held (the files' names and bytes come
    #: from the whole batch): the dispatcher then keeps a partial batch's end.
    stable_batches: bool = False

    @classmethod
    def template_problem(cls, template: str) -> str | None:
        """Why a `filename` template cannot be used with this format, or None."""
        from .filenames import Template

        parsed = Template(template, cls.FIELDS)
        if parsed.problem:
            return parsed.problem
        if not {f.name for f in parsed.fields} & set(cls.DISTINCT):
            return ("needs one of " + ", ".join("{" + f + "}" for f in cls.DISTINCT)
                    + ", or two files could get one name")
        return None

    def attach_metrics(self, metrics: Metrics) -> None:
        """The sink's metrics, once, before the first delivery. By default: none of its own."""
        return

    def attach_state(self, load: StateLoader) -> None:
        """As `Sink.attach_state`: a format that remembers what it wrote."""
        return

    def take_state(self) -> list[SinkState]:
        """As `Sink.take_state`."""
        return []

    @abstractmethod
    async def plan(self, events: Sequence[FeedEvent]) -> Plan:
        """The files for a batch. Raises `Permanent` for an event it cannot write."""

    @abstractmethod
    def head_size(self, f: OutFile) -> int:
        """How many bytes of a file already at `f.name` `held` needs to see."""

    @abstractmethod
    def held(self, head: bytes, f: OutFile) -> str | None:
        """None when the file at `f.name` (its first `head_size` bytes) is `f` itself, written
        before; else what it holds, for the refusal ("a file streamd did not write")."""

    def written(self, f: OutFile) -> None:
        """`f` went (not found there). By default nothing is counted beyond the file."""
        return
