"""Secret values in the config: only ever references, never inline.

    "env:NAME"          the environment variable NAME
    "file:/path"        the file's content (one trailing newline stripped)
    "credential:NAME"   $CREDENTIALS_DIRECTORY/NAME, as systemd's LoadCredential= provides

A `Secret` prints as its reference (`env:NAME`), never as its value: it is safe
in logs, `repr`, exceptions and `streamd check` output. Code that must send the
value calls `reveal()` at the last moment. A TLS key given as a reference reaches ssl
through `key_file` (ssl loads keys only from files).

Some secrets are not `Secret`s: a token in a URL's query string (receivers that
authenticate that way), a password before its `@`, key material pasted where a path
was expected. `redact` takes them out of any text that is shown (the log formatters,
`/readyz` reasons, `streamd check`), and `shown` is how `check` prints a config value.
"""

from __future__ import annotations

import os
import re
import ssl
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from .errors import SecretError

_SCHEMES = ("env", "file", "credential")


def is_reference(value: str) -> bool:
    """Whether a string is a secret reference (env:, file: or credential:) rather than a path."""
    scheme, sep, target = value.partition(":")
    return bool(sep) and scheme in _SCHEMES and bool(target)


def split_reference(value: str) -> tuple[str, str] | None:
    """(text before, reference) when a value is, or ends with, a secret reference after a
    space ("Bearer env:TOKEN"); else None."""
    if is_reference(value):
        return "", value
    before, sep, last = value.rpartition(" ")
    return (before + sep, last) if sep and is_reference(last) else None


def is_key_material(value: str) -> bool:
    """Whether a value holds a PEM block (a private key, or a certificate pasted inline)."""
    return "-----BEGIN" in value


class Secret:
    __slots__ = ("_value", "reference")

    def __init__(self, reference: str, value: str) -> None:
        self.reference = reference
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.reference!r})"

    def __str__(self) -> str:
        return f"<secret {self.reference}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other.reference == self.reference

    def __hash__(self) -> int:
        return hash(self.reference)

    @classmethod
    def resolve(cls, reference: object, environ: os._Environ[str] | dict[str, str] | None = None,
                base_dir: Path | None = None) -> Secret:
        """Read the value a reference points at; raise `SecretError` naming what is wrong.
        A relative `file:` path is relative to `base_dir` (the config file's directory)."""
        env = os.environ if environ is None else environ
        if isinstance(reference, Secret):
            return reference
        if not isinstance(reference, str):
            raise SecretError(
                f"expected a secret reference (env:NAME, file:/path or credential:NAME), "
                f"got {type(reference).__name__}"
            )
        scheme, sep, target = reference.partition(":")
        if not sep or scheme not in _SCHEMES or not target:
            # Do not echo the value: an inline secret is exactly what must not be printed.
            raise SecretError(
                "secrets cannot be written inline: use env:NAME, file:/path or credential:NAME"
            )
        if scheme == "env":
            value = env.get(target)
            if value is None:
                raise SecretError(f"environment variable {target} is not set")
            return cls(reference, value)
        if scheme == "file":
            path = Path(target).expanduser()
            if not path.is_absolute() and base_dir is not None:
                path = base_dir / path
            return cls(reference, _read(path, f"file {target}"))
        creds = env.get("CREDENTIALS_DIRECTORY")
        if not creds:
            raise SecretError(
                f"credential:{target} needs $CREDENTIALS_DIRECTORY "
                "(set by systemd's LoadCredential=); it is not set"
            )
        if "/" in target or target in (".", ".."):
            raise SecretError(f"credential name {target!r} must be a plain name")
        return cls(reference, _read(Path(creds) / target, f"credential {target}"))


def _read(path: Path, what: str) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SecretError(f"{what} does not exist") from None
    except PermissionError:
        raise SecretError(f"{what} is not readable by this user") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretError(f"{what} cannot be read ({type(exc).__name__})") from None
    if text.endswith("\n"):
        text = text[:-1]
        if text.endswith("\r"):
            text = text[:-1]
    if not text:
        raise SecretError(f"{what} is empty")
    return text


@contextmanager
def key_file(key: str) -> Iterator[str]:
    """A path ssl can load the key from: the path itself, the file a reference names, or
    (for env:) a private temporary file that is gone as soon as the key is loaded."""
    if not is_reference(key):
        yield key
        return
    scheme, _, target = key.partition(":")
    if scheme == "file":
        yield target
        return
    if scheme == "credential":
        yield str(Path(os.environ.get("CREDENTIALS_DIRECTORY", "")) / target)
        return
    pem = Secret.resolve(key).reveal()
    with tempfile.TemporaryDirectory(prefix="streamd-key-") as tmp:
        path = Path(tmp) / "key.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(pem)
        yield str(path)


# ---------------------------------------------------------------- redaction

REDACTED = "***"
# A URL in free text ends before a space or a quote, and not on the punctuation after it
# ("failed at https://h/x?a=1: timeout" keeps its ": ").
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>`]*[^\s\"'<>`.,:;!?)\]}]")
_PEM = re.compile(r"-----BEGIN.*?(?:-----END[^\n]*?-----|\Z)", re.S)


def redact_url(url: str) -> str:
    """A URL with what may be a credential replaced by ***: the password (or a lone user
    name, which is as often a token: `https://TOKEN@host`), every query value (the names
    stay: `?token=***&page=***`), and a fragment. Scheme, host, port and path stay."""
    try:
        u = urlsplit(url)
    except ValueError:  # e.g. an unclosed "[" in the host: show nothing after the scheme
        scheme = url.partition("://")[0]
        return f"{scheme}://{REDACTED}"
    netloc = u.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, sep, _ = userinfo.partition(":")
        netloc = f"{user}:{REDACTED}@{host}" if sep else f"{REDACTED}@{host}"
    out = f"{u.scheme}://{netloc}{u.path}"
    if u.query:
        out += "?" + "&".join(
            (p.partition("=")[0] + "=" + REDACTED) if "=" in p else (REDACTED if p else "")
            for p in u.query.split("&"))
    if u.fragment:
        out += "#" + REDACTED
    return out


def redact(text: str) -> str:
    """Free text (a log message, an error from an HTTP library, a readiness reason) with
    every URL redacted as `redact_url` does, and every PEM block replaced. Text with
    neither is returned as is, after two substring searches."""
    if "://" in text:
        text = _URL.sub(lambda m: redact_url(m.group()), text)
    if "-----BEGIN" in text:
        text = _PEM.sub("<redacted key material>", text)
    return text


def shown(value: str) -> str:
    """A config string as `streamd check` prints it: key material never; a secret
    reference as `<redacted env:NAME>` (also after text: "Bearer <redacted env:T>");
    URLs redacted."""
    if is_key_material(value):
        return "<redacted key material>"
    split = split_reference(value)
    if split is not None:
        return f"{split[0]}<redacted {split[1]}>"
    return redact(value)


def tls_file_problems(files: Sequence[tuple[str, str | None]], load: Callable[[], object],
                      *, key_hint: str, failed: str) -> list[str]:
    """What is wrong with a config's TLS files (`(key name, value)` pairs: `ca`, `cert`,
    `key`), never echoing key material; when each looks right, `load()` (building the
    SSL context) must succeed, else `failed` with the reason, which names files only."""
    problems: list[str] = []
    for name, value in files:
        if value is None:
            continue
        if is_key_material(value):
            # Never echoed: for `key` it is the private key itself. (Pasted into a path
            # field, the config loader made it a path, still holding the PEM text.)
            problems.append(f"{name}: holds PEM text; give the path of a file that holds it"
                            + (key_hint if name == "key" else ""))
        elif name == "key" and is_reference(value):
            try:
                Secret.resolve(value)
            except SecretError as exc:
                problems.append(f"key: {exc}")
        elif not Path(value).is_file():
            problems.append(f"{name}: {value} is not a readable file")
    if not problems:
        try:
            load()
        except (ssl.SSLError, OSError, SecretError) as exc:
            why = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__
            problems.append(f"{failed} ({why})")
    return problems
