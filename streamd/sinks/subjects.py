"""NATS subjects from the nats sink's `subject` template (docs/sinks/nats.md). Pure.

A subject is tokens joined by `.`; a consumer filters on them (`fin.acme.>`), so distinct
values must give distinct subjects, and no value may add a token or a wildcard. Rules:

- The template is tokens joined by `.`. A token is literal text (`A-Z a-z 0-9 _ -`) or
  exactly one field, `{provider}`, `{source}`, `{tenant}`, `{entity}`, `{op}`, `{type}` or
  `{shard}`. The first token is literal: the stream's subjects are then `<first>.>`,
  and no value can put a message under `$JS…` or `_INBOX…`.
- A field's value is escaped into one token: `A-Z a-z 0-9 _ -` stay, every other byte of
  its UTF-8 becomes `~XX` (upper-case hex; `.` → `~2E`, `~` → `~7E`, `*` → `~2A`), and an
  empty value is `~` alone. A `~` in an escaped value is always followed by two hex
  digits, except in the empty value's `~`: one subject has one reading.
- The shard is always a token: where the template has `{shard}`, or else appended as
  the last token. One shard is then one subject filter (`fin.*.*.<shard>`), which the
  sink asks the stream about (what did this shard store last?), and order per subject
  is one producer's order.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass

FIELDS = ("provider", "source", "tenant", "entity", "op", "type", "shard")
#: A subject longer than this is refused (the event goes to dead letters): NATS has no
#: hard limit, but a protocol line holds it, and a tenant id from outside is no reason
#: to send kilobytes of subject.
MAX_SUBJECT = 1024
_LITERAL = re.compile(r"[A-Za-z0-9_-]+\Z")  # \Z, not $: "$" also matches before a final "\n"
_SAFE = re.compile(r"[A-Za-z0-9_-]+\Z")
_SAFE_BYTES = frozenset((string.ascii_letters + string.digits + "_-").encode())


def escape(value: str) -> str:
    """One subject token for any text, injectively (see the module's rules)."""
    if _SAFE.match(value):
        return value
    if not value:
        return "~"
    return "".join(chr(b) if b in _SAFE_BYTES else f"~{b:02X}"
                   for b in value.encode("utf-8", "surrogatepass"))


@dataclass(frozen=True)
class Template:
    """A parsed template: `tokens` are literal text or (None, field). `problem` says why
    a template cannot be used; `render` and `filter` are only for a template without one."""

    tokens: tuple[tuple[str, str | None], ...]
    problem: str | None

    @classmethod
    def parse(cls, template: str) -> Template:
        tokens: list[tuple[str, str | None]] = []
        parts = template.split(".")
        for i, part in enumerate(parts):
            if not part:
                return cls((), "has an empty token (two dots in a row, or one at an end)")
            m = re.fullmatch(r"\{([^{}]*)\}", part)
            if m:
                field = m.group(1)
                if field not in FIELDS:
                    return cls((), "unknown field {" + field + "} (known: "
                               + ", ".join("{" + f + "}" for f in FIELDS) + ")")
                if i == 0:
                    return cls((), "must begin with a literal token (e.g. \"fin.{tenant}.{entity}\"): "
                                   "the stream's subjects are then \"fin.>\"")
                if any(f == field for _, f in tokens):
                    return cls((), "{" + field + "} is used twice")
                tokens.append(("", field))
            elif "{" in part or "}" in part:
                return cls((), f"token {part!r}: a field fills a whole token, between dots "
                               "(\"fin.{tenant}.{entity}\"), and is only a name in braces")
            elif not _LITERAL.match(part):
                return cls((), f"token {part!r}: literal text is letters, digits, '_' and '-'")
            else:
                tokens.append((part, None))
        if not any(f == "shard" for _, f in tokens):
            tokens.append(("", "shard"))
        return cls(tuple(tokens), None)

    @property
    def prefix(self) -> str:
        """The first token: the default stream subjects are `<prefix>.>`."""
        return self.tokens[0][0]

    def render(self, values: Mapping[str, str]) -> str:
        return ".".join(text if field is None else escape(values[field])
                        for text, field in self.tokens)

    def filter(self, shard: str) -> str:
        """The subjects one shard publishes to, as a NATS filter."""
        return ".".join(text if field is None else escape(shard) if field == "shard" else "*"
                        for text, field in self.tokens)


def valid_pattern(pattern: str) -> bool:
    """A subject or filter NATS takes: non-empty tokens, `*` a whole token, `>` the last."""
    tokens = pattern.split(".")
    for i, t in enumerate(tokens):
        if not t or any(c in t for c in " \t\r\n"):
            return False
        if ("*" in t and t != "*") or (">" in t and (t != ">" or i != len(tokens) - 1)):
            return False
    return True


def covers(pattern: str, subject: str) -> bool:
    """Whether every subject `subject` (itself a filter: `*` and `>` allowed) can match is
    matched by `pattern`: the stream's subjects must cover what a shard publishes."""
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s):
            return False
        if s[i] == ">":
            return False
        if token != "*" and token != s[i]:
            return False
    return len(p) == len(s)
