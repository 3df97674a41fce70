"""The feed: one SQLite file (schema), one writer task (writer), many readers (reader)."""

from .reader import DeadLetterRow, FeedEvent, FeedReader, match_clause
from .schema import SCHEMA_VERSION, classify, connect
from .writer import Batch, Committed, DeadLetter, EntityState, Pending, Writer, WriterClosed

__all__ = [
    "SCHEMA_VERSION", "Batch", "Committed", "DeadLetter", "DeadLetterRow", "EntityState",
    "FeedEvent", "FeedReader", "Pending", "Writer", "WriterClosed", "classify", "connect",
    "match_clause",
]
