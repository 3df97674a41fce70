"""The feed: one SQLite file (schema), one writer task (writer) committing batches (batch)
in transactions (transaction), many readers (reader); credentials kept in it sealed
(sealed)."""

from .batch import Batch, Committed, DeadLetter, EntityState, RecordTenant, SinkState
from .reader import FeedEvent, FeedReader
from .schema import connect
from .sealed import SECRET_PREFIX
from .writer import Pending, Writer, write_state

__all__ = [
    "SECRET_PREFIX", "Batch", "Committed", "DeadLetter", "EntityState", "FeedEvent", "FeedReader",
    "Pending", "RecordTenant", "SinkState", "Writer", "connect", "write_state",
]
