"""Patterns that validate whole values end in `\\Z`, not `$`: `$` also matches before a
final newline, so `"EUR\\n"` passed as a currency and a tenant of `"0\\n"` as a safe NATS
subject token (found by a randomised test). Each pattern here refuses its valid value
with a newline appended."""
from __future__ import annotations

import re

import msgspec
import pytest

from streamd import configfile
from streamd.model import Invoice, fields
from streamd.model.canonical import _CANONICAL_STAMP
from streamd.providers.asteria.config import _HEADER
from streamd.sinks.http import _TOKEN
from streamd.sinks.nats_config import _STREAM_NAME
from streamd.sinks.postgres.config import SCHEMA_RE

CASES = [
    (fields.CURRENCY, "EUR"), (fields.COUNTRY, "CH"), (fields.DATE, "2026-12-04"),
    (fields.STAMP, "2026-12-04T10:00:00Z"), (_CANONICAL_STAMP, "2026-12-04T10:00:00Z"),
    (_HEADER, "x-asteria-secret"), (_TOKEN, "X-Api-Key"), (SCHEMA_RE, "streamd"),
    (configfile.NAME_RE, "erp"), (configfile.SHARD_RE, "eu-1"), (re.compile(_STREAM_NAME), "FIN"),
]


@pytest.mark.parametrize(("pattern", "valid"), CASES, ids=[p.pattern for p, _ in CASES])
def test_a_value_with_a_newline_after_it_is_refused(pattern: re.Pattern[str], valid: str) -> None:
    assert pattern.match(valid)
    assert not pattern.match(valid + "\n")


def test_the_model_refuses_a_currency_or_country_with_a_newline() -> None:
    good = b'{"direction": "receivable", "currency": "EUR", "total": "1.00"}'
    assert msgspec.json.decode(good, type=Invoice).currency == "EUR"
    with pytest.raises(msgspec.ValidationError, match="currency"):
        msgspec.json.decode(good.replace(b'"EUR"', b'"EUR\\n"'), type=Invoice)
