"""Authentication: bearer token for ``/api/...``, shared-secret header for ``/webhook``.

Both compare with ``hmac.compare_digest`` over UTF-8 bytes (constant time, no exception on
non-ASCII input). Tokens and secrets are never logged.
"""

from __future__ import annotations

import hmac
import logging
import threading

from werkzeug.exceptions import Unauthorized

log = logging.getLogger("annotator_bridge.web")


class ApiUnauthorized(Unauthorized):
    """401 with a ``WWW-Authenticate: Bearer`` challenge."""

    def get_headers(self, environ=None, scope=None):  # type: ignore[no-untyped-def,override]
        headers = super().get_headers(environ, scope)
        headers.append(("WWW-Authenticate", 'Bearer realm="al-loop"'))
        return headers


def secrets_match(expected: str, provided: str | None) -> bool:
    """Constant-time comparison; False when nothing was provided."""
    if provided is None:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), provided.encode("utf-8"))


def check_bearer(expected: str | None, authorization: str | None) -> None:
    """Raise 401 unless ``authorization`` is ``Bearer <expected>``.

    Without a configured token (``AL_LOOP_API_TOKEN`` unset) the management API is closed.
    """
    if not expected:
        raise ApiUnauthorized("the management API is disabled: set AL_LOOP_API_TOKEN on the server")
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiUnauthorized("missing bearer token: send 'Authorization: Bearer <AL_LOOP_API_TOKEN>'")
    if not secrets_match(expected, token.strip()):
        raise ApiUnauthorized("invalid bearer token")


class WebhookGuard:
    """Checks the ``X-AL-Loop-Secret`` header; without a configured secret accepts and warns once."""

    def __init__(self, secret: str | None) -> None:
        self.secret = secret
        self._warned = False
        self._lock = threading.Lock()

    def check(self, provided: str | None) -> None:
        if not self.secret:
            with self._lock:
                if not self._warned:
                    self._warned = True
                    log.warning("AL_LOOP_WEBHOOK_SECRET is not set: webhooks are accepted without authentication")
            return
        if not secrets_match(self.secret, provided):
            raise Unauthorized("missing or wrong X-AL-Loop-Secret header")
