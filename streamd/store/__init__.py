"""The feed: one SQLite file (schema), one writer task (writer), many readers (reader);
credentials kept in it sealed (sealed)."""

from .reader import DeadLetterRow, FeedEvent, FeedReader, match_clause
from .schema import SCHEMA_VERSION, classify, connect
from .sealed import SECRET_PREFIX, SecretUnreadable
from .writer import (
    Batch,
    Committed,
    DeadLetter,
    EntityState,
    Pending,
    SinkState,
    Writer,
    WriterClosed,
    write_state,
)

__all__ = [
    "SCHEMA_VERSION", "SECRET_PREFIX", "Batch", "Committed", "DeadLetter", "DeadLetterRow",
    "EntityState", "FeedEvent", "FeedReader", "Pending", "SecretUnreadable", "SinkState", "Writer",
    "WriterClosed", "classify", "connect", "match_clause", "write_state",
]
