"""``LabelStudioConnection``: the SDK clients of one Label Studio and the retry policy of every call.

Every call goes through one retry policy: connection errors, timeouts of idempotent
calls and HTTP 5xx are retried with capped exponential backoff and end in
``LabelStudioUnavailable``; HTTP 4xx raise ``LabelStudioRequestError`` (404:
``LabelStudioNotFound``, also an al-loop ``NotFoundError``) carrying Label Studio's
``detail``. The SDK's own retries are switched off so the policy lives here.
Endpoints missing from SDK 2.x (``/next/``, ``/model-versions/``, paged task listing
with filters) are called raw (``_raw``) through the SDK's authenticated httpx client.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, Self, TypeVar

import httpx
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from al_loop.errors import AlLoopError, NotFoundError

log = logging.getLogger("annotator_bridge.labelstudio.gateway")  # the retry warnings keep their logger name
T = TypeVar("T")

MAX_RETRIES = 10


class LabelStudioUnavailable(AlLoopError):
    """Label Studio did not answer (connection refused/reset, timeout, HTTP 5xx) after all retries."""


class LabelStudioRequestError(AlLoopError):
    """Label Studio rejected a request (HTTP 4xx); ``detail`` is its explanation."""

    def __init__(self, message: str, status_code: int | None = None, detail: Any = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.detail = detail


class LabelStudioNotFound(LabelStudioRequestError, NotFoundError):
    """HTTP 404: the project, task or annotation does not exist (or is not visible to this token)."""


def as_plain(obj: Any) -> Any:
    """SDK pydantic models -> plain dicts."""
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json", by_alias=True)
    if hasattr(obj, "dict"):
        return obj.dict()
    return obj


def _detail(body: Any) -> str:
    if isinstance(body, Mapping):
        parts = [str(body.get("detail") or "")]
        if body.get("validation_errors"):
            parts.append(json.dumps(body["validation_errors"], default=str)[:500])
        text = " ".join(p for p in parts if p)
        return text or json.dumps(body, default=str)[:500]
    return str(body)[:500]


class LabelStudioConnection:
    """One Label Studio, one SDK client per token, and ``_call`` / ``_raw`` under the retry policy.

    ``url`` is Label Studio's base URL, ``api_key`` a legacy token or a personal access
    token (the SDK picks the scheme). ``timeout`` is per request in seconds; ``retries``
    is how many times a failed call is retried (capped at 10), waiting ``backoff``,
    2*``backoff``, ... seconds (capped at ``max_backoff``, with jitter).
    """

    def __init__(self, url: str, api_key: str, *, timeout: float = 30.0, retries: int = 4,
                 backoff: float = 0.5, max_backoff: float = 8.0) -> None:
        if not api_key:
            raise AlLoopError("a Label Studio API key is required")
        self.url = url.rstrip("/")
        self.timeout = float(timeout)
        self.retries = max(0, min(int(retries), MAX_RETRIES))
        self.backoff = max(0.0, float(backoff))
        self.max_backoff = max(self.backoff, float(max_backoff))
        self._api_key = api_key
        self._clients: dict[str, LabelStudio] = {}
        self.client = self._client(None)

    def _client(self, token: str | None) -> LabelStudio:
        key = token or self._api_key
        if key not in self._clients:
            self._clients[key] = LabelStudio(base_url=self.url, api_key=key, timeout=self.timeout, max_retries=0)
        return self._clients[key]

    def close(self) -> None:
        for c in self._clients.values():
            c._client_wrapper.httpx_client.httpx_client.close()
        self._clients.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, what: str, fn: Callable[[], T], *, idempotent: bool = True) -> T:
        """Run ``fn`` under the retry policy; ``what`` names the operation in errors and logs."""
        attempt = 0
        while True:
            try:
                return fn()
            except ApiError as exc:
                status = exc.status_code or 0
                if status < 500:
                    msg = f"Label Studio rejected {what}: HTTP {status}: {_detail(exc.body)}"
                    if status in (401, 403):
                        msg += " (check the API key and that legacy tokens are enabled)"
                    cls = LabelStudioNotFound if status == 404 else LabelStudioRequestError
                    raise cls(msg, status, exc.body) from None
                reason = f"HTTP {status}: {_detail(exc.body)}"
                cause: Exception = exc
            except httpx.TimeoutException as exc:
                if not idempotent:
                    raise LabelStudioUnavailable(f"Label Studio at {self.url} timed out during {what} after "
                                                 f"{self.timeout:.0f} s; it may have been applied") from exc
                reason, cause = f"timeout ({type(exc).__name__})", exc
            except httpx.TransportError as exc:
                reason, cause = f"{type(exc).__name__}: {exc}", exc
            if attempt >= self.retries:
                raise LabelStudioUnavailable(f"Label Studio at {self.url} unavailable during {what} after "
                                             f"{attempt + 1} attempt(s): {reason}") from cause
            delay = min(self.backoff * (2 ** attempt), self.max_backoff) * random.uniform(0.8, 1.2)
            log.warning("Label Studio %s failed (%s); retry %d/%d in %.2f s", what, reason, attempt + 1,
                        self.retries, delay)
            time.sleep(delay)
            attempt += 1

    def _raw(self, method: str, path: str, *, token: str | None = None, params: Mapping[str, Any] | None = None,
             json_body: Any = None, allow_404: bool = False) -> Any:
        """Raw JSON request through the SDK's authenticated client; raises like ``_call``."""
        wrapper = self._client(token)._client_wrapper

        def go() -> Any:
            resp = wrapper.httpx_client.request(path.lstrip("/"), method=method, params=dict(params or {}),
                                                json=json_body, request_options={"max_retries": 0})
            if allow_404 and resp.status_code == 404:
                return None
            if resp.status_code >= 400:
                try:
                    body: Any = resp.json()
                except ValueError:
                    body = resp.text
                raise ApiError(status_code=resp.status_code, headers=dict(resp.headers), body=body)
            if not resp.content:
                return None
            return resp.json()

        return self._call(f"{method} /{path.lstrip('/')}", go, idempotent=method in ("GET", "PATCH", "PUT", "DELETE"))

    # ------------------------------------------------------------------ users / health
    def whoami(self, token: str | None = None) -> dict[str, Any]:
        return self._raw("GET", "api/current-user/whoami", token=token)
