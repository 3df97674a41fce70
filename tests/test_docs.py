"""Every link in README.md and docs/ resolves inside the repository.

The docs are read on GitHub and in a clone, so a relative link must name a file that a
clone has, and a `#fragment` must name a heading of its target as GitHub slugs it. Both
break silently when a heading is reworded or a file moves; this test makes them break
loudly. Links into code blocks and code spans are examples, not links, and are skipped;
links with a scheme (https:, mailto:) are outside this check.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_CODE_SPAN = re.compile(r"(`+)(.+?)(?<!`)\1(?!`)", re.S)
# [text](target "title") and ![alt](target); the text may hold one level of brackets.
_INLINE_LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\]]*\])*)\]\(\s*(<[^>]*>|[^\s()]*(?:\([^\s()]*\)[^\s()]*)*)"
                          r"(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*\)")
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
_HTML_ID = re.compile(r"<a\s[^>]*\b(?:id|name)\s*=\s*[\"']([^\"']+)[\"']", re.I)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def documents() -> list[Path]:
    """What this test reads: the README and everything under docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


# The Unicode categories github-slugger keeps: letters, marks, decimal and letter numbers,
# connector punctuation (`_`). It drops the rest (other numbers such as `²`, punctuation,
# symbols, separators, controls) except `-` and the space, which becomes `-`. It also keeps
# the few symbols Unicode calls alphabetic (`Ⓐ`); this does not, and no heading has one.
_KEPT = frozenset({"Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "Pc"})


def slug(text: str) -> str:
    """GitHub's heading id (github-slugger) for a heading's rendered text: lowercased,
    the characters of `_KEPT` categories and `-` kept, each space made `-`."""
    kept = "".join(c for c in text.lower() if c in " -" or unicodedata.category(c) in _KEPT)
    return kept.replace(" ", "-")


def rendered(markdown: str) -> str:
    """The text a heading renders to, which is what GitHub slugs: code spans keep their
    content, links and images keep their text, emphasis markers, HTML tags and the
    backslash of an escape go."""
    out = []
    pos = 0
    for m in _CODE_SPAN.finditer(markdown):
        out.append(_inline_text(markdown[pos:m.start()]))
        content = m.group(2)
        out.append(content[1:-1] if content.startswith(" ") and content.endswith(" ")
                   and content.strip() else content)
        pos = m.end()
    out.append(_inline_text(markdown[pos:]))
    return "".join(out).strip()


def _inline_text(text: str) -> str:
    text = re.sub(r"!?\[((?:[^\[\]]|\[[^\]]*\])*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"\*+", "", text)
    text = re.sub(r"(?<![0-9A-Za-z])_+|_+(?![0-9A-Za-z])", "", text)
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", text)


@dataclass(frozen=True)
class Link:
    source: Path
    line: int
    target: str


def _prose(lines: list[str]) -> list[tuple[int, str]]:
    """(line number, line) for the lines outside fenced code blocks."""
    out = []
    fence: str | None = None
    for number, line in enumerate(lines, 1):
        m = _FENCE.match(line)
        if fence is None:
            if m:
                fence = m.group(1)
                continue
            out.append((number, line))
        elif m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) \
                and not line[m.end():].strip():
            fence = None
    return out


def anchors(path: Path) -> set[str]:
    """Every `#fragment` that lands in `path` on GitHub: its headings' slugs, the second
    of two equal slugs with `-1`, the third `-2`, and explicit `<a id=…>`/`<a name=…>`."""
    lines = path.read_text(encoding="utf-8").splitlines()
    prose = _prose(lines)
    seen: dict[str, int] = {}
    found: set[str] = set()

    def add(heading: str) -> None:
        base = result = slug(rendered(heading))
        while result in seen:
            seen[base] += 1
            result = f"{base}-{seen[base]}"
        seen[result] = 0
        found.add(result)

    previous: tuple[int, str] | None = None
    for number, line in prose:
        if m := _ATX.match(line):
            add(m.group(2) or "")
            previous = None
            continue
        # A setext heading: a paragraph line underlined with === or ---.
        if (previous and previous[0] == number - 1 and _SETEXT.match(line)
                and previous[1].strip() and not previous[1].lstrip().startswith(("-", "*", "|", ">"))):
            add(previous[1].strip())
            previous = None
            continue
        found.update(_HTML_ID.findall(_CODE_SPAN.sub("", line)))
        previous = (number, line)
    return found


def links(path: Path) -> list[Link]:
    """Every link written in `path`'s prose (inline and reference definitions)."""
    out: list[Link] = []
    for number, line in _prose(path.read_text(encoding="utf-8").splitlines()):
        text = _CODE_SPAN.sub("", line)
        targets = [m.group(2) for m in _INLINE_LINK.finditer(text)]
        if m := _REFERENCE.match(text):
            targets.append(m.group(1))
        out.extend(Link(path, number, t.strip("<>")) for t in targets)
    return out


def problems(path: Path, root: Path = ROOT) -> list[str]:
    """What is wrong with each relative link in `path`, one line per link, as
    `file:line: target: what`."""
    out = []
    for link in links(path):
        target = link.target
        if not target or _SCHEME.match(target):
            continue
        where = f"{link.source.relative_to(root)}:{link.line}: {target}"
        file_part, _, fragment = target.partition("#")
        if file_part.startswith("/"):
            resolved = (root / unquote(file_part).lstrip("/")).resolve()
        elif file_part:
            resolved = (link.source.parent / unquote(file_part)).resolve()
        else:
            resolved = link.source
        if not resolved.is_relative_to(root):
            out.append(f"{where}: leaves the repository (a clone has no {resolved})")
            continue
        if not resolved.exists():
            out.append(f"{where}: no such file")
            continue
        if fragment and resolved.suffix == ".md" and unquote(fragment) not in anchors(resolved):
            out.append(f"{where}: no heading of {resolved.relative_to(root)} has the id #{fragment}")
    return out


def test_github_slugs() -> None:
    """The slug rule against ids GitHub gives the headings these docs have."""
    cases = {
        '`provider = "synthetic"`': "provider--synthetic",
        "`[sinks.<name>]`": "sinksname",
        "Encrypting the tokens: `[store] secrets_key`": "encrypting-the-tokens-store-secrets_key",
        "Delivery, idempotency and its one limit": "delivery-idempotency-and-its-one-limit",
        "Ingest end to end: Asteria → streamd → feed → file":
            "ingest-end-to-end-asteria--streamd--feed--file",
        "Sales invoice status [C]": "sales-invoice-status-c",
        "Making a sink deliver again: `streamd sink reset`": "making-a-sink-deliver-again-streamd-sink-reset",
        "Store appends on a 1,000,000-event feed": "store-appends-on-a-1000000-event-feed",
        "**Bold** and [a link](x.md) and _emphasis_": "bold-and-a-link-and-emphasis",
        "Überweisung — Zahlungsstatus": "überweisung--zahlungsstatus",
        "Squares² and ½ are dropped": "squares-and--are-dropped",
    }
    assert {h: slug(rendered(h)) for h in cases} == cases


def test_duplicate_headings_get_numbered_ids(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Notes\n\n## Notes\n\n### notes\n\n```\n# Notes (in code: no heading)\n```\n\n"
                    "Setext\n------\n", encoding="utf-8")
    assert anchors(page) == {"notes", "notes-1", "notes-2", "setext"}


def test_a_broken_link_or_anchor_is_named(tmp_path: Path) -> None:
    """The check is not vacuous: each kind of breakage in a page is reported, once, and
    what resolves, or is only an example in code, is not."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "there.md").write_text("# A heading\n", encoding="utf-8")
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "# Page\n"
        "[ok](there.md#a-heading) [self](#page) [web](https://example.com/x.md#nope)\n"
        "[missing file](gone.md)\n"
        "[missing anchor](there.md#a-heading-that-was-renamed)\n"
        "[outside](../../shared/ARCHITECTURE.md)\n"
        "[own missing anchor](#nowhere)\n"
        "`[in a code span](gone.md)`\n"
        "```\n[in a code block](gone.md)\n```\n"
        "[ref]: also-gone.md\n",
        encoding="utf-8")
    found = problems(page, root=tmp_path)
    assert [p.split(": ", 1)[1] for p in found] == [
        "gone.md: no such file",
        "there.md#a-heading-that-was-renamed: no heading of docs/there.md has the id "
        "#a-heading-that-was-renamed",
        f"../../shared/ARCHITECTURE.md: leaves the repository (a clone has no "
        f"{(tmp_path.parent / 'shared' / 'ARCHITECTURE.md').resolve()})",
        "#nowhere: no heading of docs/page.md has the id #nowhere",
        "also-gone.md: no such file",
    ]
    assert [p.split(":", 2)[1] for p in found] == ["3", "4", "5", "6", "11"]


def test_every_link_in_the_docs_resolves() -> None:
    docs = documents()
    assert ROOT / "docs" / "providers" / "connec.md" in docs, "docs/ is read with its subdirectories"
    # The link extraction finds the links there are: a regex that matched nothing would
    # pass everything.
    assert sum(len(links(d)) for d in docs) > 100
    broken = [p for d in docs for p in problems(d)]
    assert not broken, "broken links:\n" + "\n".join(broken)
