"""A small JSON client for al-loop's management API, and a polling helper.

Used by the benchmarks and the integration tests; also a starting point for scripts that drive
al-loop (``ApiClient(url, token).post("/api/projects", spec)``). Standard library only.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any


class ApiError(RuntimeError):
    """An HTTP error answer of the API: ``status`` and the (truncated) body."""

    def __init__(self, method: str, path: str, status: int, body: bytes) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body[:2000]!r}")
        self.status = status
        self.body = body


class ApiClient:
    """Minimal JSON client for al-loop's HTTP API (``Authorization: Bearer <token>``)."""

    def __init__(self, base_url: str, token: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token

    def request(self, method: str, path: str, body: object = None, timeout: float = 120,
                headers: Mapping[str, str] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        hdrs = {"Content-Type": "application/json"}
        if self.token:
            hdrs["Authorization"] = f"Bearer {self.token}"
        hdrs.update(headers or {})
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise ApiError(method, path, exc.code, exc.read()) from None
        return json.loads(raw) if raw else None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: object = None, **kw: Any) -> Any:
        return self.request("POST", path, body, **kw)


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.1,
               what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns a truthy value (returned); ``TimeoutError`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


__all__ = ["ApiClient", "ApiError", "wait_until"]
