"""What the nats sink publishes and reads back, apart from the sink and from nats-py:
the sink builds `Message`s, and `nats_io` (which loads nats-py) sends them and answers
with `Stored`; each imports this module, neither the other's."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Message:
    """One event as published: its feed seq, its id (Nats-Msg-Id), subject, its own header
    lines (`Name: value\r\n`, encoded once), body, and when it was committed (unix ms)."""

    seq: int
    id: str
    subject: str
    head: bytes
    body: bytes
    committed_ms: int = 0

    def with_header(self, name: str, value: str) -> Message:
        return Message(self.seq, self.id, self.subject, self.head + f"{name}: {value}\r\n".encode(),
                       self.body, self.committed_ms)

    @property
    def size(self) -> int:
        """What NATS counts against max_payload: the header block (with the batch's own
        headers, ~250 bytes) and the body."""
        return len(self.head) + 250 + len(self.body)


def header_lines(headers: dict[str, str]) -> bytes:
    """`Name: value\r\n` lines. The values are the sink's own (ids, names from the config,
    numbers): a line break in one would end the header block early, so it is refused."""
    text = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    if text.count("\n") != len(headers) or text.count("\r") != len(headers):
        raise ValueError("a header value holds a line break")
    return text.encode()


@dataclass(frozen=True)
class Stored:
    """A message the stream holds: its stream seq and headers."""

    seq: int
    headers: dict[str, str]

    def int_header(self, name: str) -> int:
        value = self.headers.get(name, "")
        return int(value) if value.isdigit() else 0
