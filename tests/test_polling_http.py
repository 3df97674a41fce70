"""The pollers' HTTP client (sources/polling.py: http_client) on a real loopback socket."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import ssl
import sys
from collections.abc import Sequence
from types import ModuleType

import pytest

from streamd.sources.polling import http_client

from .test_http_conn import Scripted, scripted

pytestmark = pytest.mark.anyio


class Lookups(importlib.abc.MetaPathFinder):
    """Counts the searches for a module that the import system makes (a module already
    imported is found in sys.modules, and no search is made)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname == self.name:
            self.count += 1
        return None


async def test_requests_do_not_search_for_sniffio_each_time() -> None:
    """httpcore imports sniffio on every lock it sets up; when it is not installed the
    failed import is not remembered, and each request searched sys.path for it again
    (84 searches in these 20 requests). streamd depends on it, so it is found once."""
    lookups = Lookups("sniffio")
    sys.meta_path.insert(0, lookups)
    try:
        async with scripted(Scripted()) as srv:
            async with http_client(ssl.create_default_context(), 10) as http:
                for _ in range(20):
                    r = await http.get(f"http://127.0.0.1:{srv.port}/page", params={"page": "1"})
                    assert r.status_code == 200
    finally:
        sys.meta_path.remove(lookups)
    assert len(srv.requests) == 20
    assert lookups.count <= 1, f"sniffio searched for {lookups.count} times in 20 requests"
