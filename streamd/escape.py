"""Text from outside made safe for a line-oriented log and a terminal.

Provider ids, rejection reasons, a receiver's answer: any of it may hold a line break
(which forges a log line, and under journald even its priority: `\\n<0>…`), an ANSI
escape (which rewrites the operator's terminal), or a bidi override (which reverses
what they read). `escape` is the one function every text rendering passes such text
through: logs, `/readyz`, `streamd status`, `streamd dlq list`, `streamd check`.

The rule: every character `str.isprintable()` refuses is written as a Python-style
escape (`\\n`, `\\r`, `\\t`, `\\x1b`, `\\u2028`, `\\U000e0001`), and so is the backslash
itself (`\\\\`). Refused are the C0 and C1 controls, DEL, the line and paragraph
separators, format characters (bidi overrides and isolates, zero-width joiners), other
spaces than ' ', surrogates, private-use and unassigned code points. Letters of every
script, accents and emoji stay as they are.

Escaping the backslash makes it injective: every backslash in the output starts an
escape whose length its next character decides, so one output has exactly one input
(`codecs.decode(out.encode("ascii", "backslashreplace"), "unicode_escape")` gives it
back). Without it a provider id holding the two characters `\\` `n` would read as a
line break that was escaped, and two different ids would print the same.

Logging calls this on every record, so text with nothing to escape costs two scans in C
(`isprintable`, a search for a backslash) and comes back as the same object.

JSON output (`streamd tail`, `status --json`, `check`, JSON logs) is already escaped
by being JSON for the C0 controls; `escape_json` writes the rest of the same set as
`\\uXXXX`, which a JSON reader decodes to the same value.
"""

from __future__ import annotations

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def _one(c: str) -> str:
    named = _NAMED.get(c)
    if named is not None:
        return named
    n = ord(c)
    if n < 0x100:
        return f"\\x{n:02x}"
    if n < 0x10000:
        return f"\\u{n:04x}"
    return f"\\U{n:08x}"


def escape(text: str) -> str:
    """`text` with every non-printable character and the backslash escaped (see above)."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(c if c.isprintable() and c != "\\" else _one(c) for c in text)


def _json_one(c: str) -> str:
    n = ord(c)
    if n < 0x10000:
        return f"\\u{n:04x}"
    n -= 0x10000  # JSON spells a code point past the BMP as a UTF-16 surrogate pair
    return f"\\u{0xD800 + (n >> 10):04x}\\u{0xDC00 + (n & 0x3FF):04x}"


def escape_json(text: str) -> str:
    """JSON text (as an encoder wrote it: C0 controls already escaped) with the rest of
    what `escape` escapes written as `\\uXXXX`: the same JSON value, safe on a terminal."""
    if text.isascii() and "\x7f" not in text:
        return text
    return "".join(c if c < "\x7f" or c.isprintable() else _json_one(c) for c in text)
