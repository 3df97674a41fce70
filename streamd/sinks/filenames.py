"""File names from the SFTP sink's `filename` template (docs/sinks/sftp.md). Pure.

A name must be safe on any server, and distinct values must give distinct names: a
sink that collapsed `x/y` and `x_y` into one name, or tenant `a-b` with number `c` and
tenant `a` with number `b-c` into `a-b-c.xml`, would let one invoice's file replace
another's. So values are escaped, never collapsed, and common names stay as they are:

- The template's own text is made safe once: characters other than `A-Z a-z 0-9 . _ -`
  become `_`, and so do dots that begin the name. It is the same in every name, so
  nothing is lost.
- A field's value is percent-escaped (its UTF-8 bytes, upper-case hex: `/` → `%2F`,
  `ü` → `%C3%BC`) where it has a character outside `A-Z a-z 0-9 . _ -`, a `%`, a `.` that
  would begin the name, and, in every field but the last, the first character of the
  text that follows the field (the `-` of `{tenant}-{number}.xml` in a tenant). Reading
  a name from the left, each field then ends at the first such character: one name
  has one reading. `acme-HZ-2026-0042.xml` stays as it is.
- Two fields with no text between them are refused (`problem`): nothing could tell
  where one ends.
- A name that would begin with `.` (the template begins with a field that is empty for
  this invoice, then a `.`) gets a `%` in front: `%` followed by anything but two hex
  digits occurs in no other name.
- A name longer than `MAX_NAME` keeps its beginning and its extension, with `~` and 20
  hex digits of the whole name's SHA-256 between; `~` occurs in no other name.

A sink's temporary files are `.<name>.streamd-<sink>.part`: never a name above (those
never begin with `.`), and recognisable as that sink's own (sink names have no `.`).
"""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass

#: A name's length, leaving room for its temporary name under NAME_MAX (255 bytes; names
#: are ASCII, everything else is escaped).
MAX_NAME = 200
NAME_MAX = 255
_SAFE = frozenset(string.ascii_letters + string.digits + "._-")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_LEADING_DOTS = re.compile(r"^\.+")
_PARTIAL_ESCAPE = re.compile(r"%[0-9A-F]?$")
_DIGEST = 20  # hex digits of SHA-256 that stand for a cut-off part: 80 bits
_MAX_EXT = 16


@dataclass(frozen=True)
class _Field:
    name: str
    spec: str
    conversion: str | None
    stop: str | None  # the first character of the text after it; None for the last field
    after: str  # that text, made safe


class Template:
    """A parsed `filename` template. `problem` says why a template cannot be used."""

    def __init__(self, template: str, known: tuple[str, ...]) -> None:
        self.problem: str | None = None
        self.prefix = ""
        self.fields: list[_Field] = []
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as exc:
            self.problem = f"not a valid template ({exc}); write a literal brace as '{{{{' or '}}}}'"
            return
        # Formatter.parse gives (text, field, spec, conversion), the text before each field;
        # an escaped brace splits a text in two, so texts are joined up to the next field.
        texts: list[str] = [""]
        fields: list[tuple[str, str, str | None]] = []
        for text, field, spec, conversion in parsed:
            texts[-1] += text
            if field is None:
                continue
            if field not in known:
                self.problem = "unknown field {" + field + "} (known: " + ", ".join(
                    "{" + f + "}" for f in known) + ")"
                return
            if fields and not texts[-1]:
                self.problem = (f"{{{fields[-1][0]}}} and {{{field}}} need text between them (such "
                                f"as '-'), or two invoices could get one name")
                return
            fields.append((field, spec or "", conversion))
            texts.append("")
        self.prefix = _LEADING_DOTS.sub(lambda m: "_" * len(m.group()), _UNSAFE.sub("_", texts[0]))
        after = [_UNSAFE.sub("_", t) for t in texts[1:]]
        for i, (field, spec, conversion) in enumerate(fields):
            stop = after[i][0] if i < len(fields) - 1 else None
            self.fields.append(_Field(field, spec, conversion, stop, after[i]))

    def render(self, values: Mapping[str, object]) -> str:
        """The file name for these values. Raises ValueError (or TypeError) for a value the
        field's format spec cannot take."""
        formatter = string.Formatter()
        out = [self.prefix]
        for i, f in enumerate(self.fields):
            value = values[f.name]
            if f.conversion:
                value = formatter.convert_field(value, f.conversion)
            text = formatter.format_field(value, f.spec)
            out.append(_escape(text, f.stop, first=i == 0 and not self.prefix))
            out.append(f.after)
        name = "".join(out)
        if name.startswith("."):
            name = "%" + name
        return _shortened(name) if len(name) > MAX_NAME else name


def _escape(text: str, stop: str | None, *, first: bool) -> str:
    out = []
    for i, c in enumerate(text):
        if c in _SAFE and c != stop and not (first and i == 0 and c == "."):
            out.append(c)
        else:
            out.extend(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass"))
    return "".join(out)


def _shortened(name: str) -> str:
    digest = hashlib.sha256(name.encode("ascii")).hexdigest()[:_DIGEST]
    stem, dot, ext = name.rpartition(".")
    tail = "~" + digest + ("." + ext if dot and stem and len(ext) <= _MAX_EXT else "")
    return _PARTIAL_ESCAPE.sub("", name[: MAX_NAME - len(tail)]) + tail


def part_name(name: str, sink: str) -> str:
    """The temporary name a sink writes `name` under before renaming it into place."""
    suffix = f".streamd-{sink}.part"
    if 1 + len(name) + len(suffix) > NAME_MAX:  # a long sink name: cut, as `_shortened` does
        digest = hashlib.sha256(name.encode("ascii")).hexdigest()[:_DIGEST]
        keep = NAME_MAX - 1 - len(suffix) - 1 - _DIGEST
        name = _PARTIAL_ESCAPE.sub("", name[:keep]) + "~" + digest
    return f".{name}{suffix}"


def is_own_part(name: str, sink: str) -> bool:
    """Whether `name` is a temporary file of this sink (another uploader's `.x.part` is not)."""
    return name.startswith(".") and name.endswith(f".streamd-{sink}.part")
