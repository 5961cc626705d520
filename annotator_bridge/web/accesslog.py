"""Access logs without secrets: the values of secret-looking query parameters are replaced by ``***``.

Clients sometimes put a token in the URL (``/api/projects?token=...``, ``/webhook?secret=...``);
al-loop never accepts one there, but werkzeug's and gunicorn's access logs write the request line
in full. ``SecretQueryFilter`` rewrites every record of the loggers it is installed on
(``install``: ``werkzeug``, ``gunicorn.access``, ``gunicorn.error``), so neither the access line
nor a "bad request syntax" error line carries the value. A parameter is secret-looking when its
name contains one of ``SECRET_NAME_PARTS`` (``token``, ``secret``, ``key``, ``pass``, ...).
"""

from __future__ import annotations

import logging
import re

SECRET_NAME_PARTS = ("token", "secret", "key", "pass", "pwd", "auth", "sig", "session", "cred", "code")
ACCESS_LOGGERS = ("werkzeug", "gunicorn.access", "gunicorn.error")
REDACTED = "***"

# a query parameter: after ? & or ; a name (percent-escapes allowed), "=" (or %3D), then the value
_PARAM = re.compile(r"(?P<lead>[?&;])(?P<name>[^=&;#\s\"'?]*)(?P<eq>=|%3[dD])(?P<value>[^&;#\s\"']*)")


def _is_secret(name: str) -> bool:
    plain = re.sub(r"%[0-9A-Fa-f]{2}", lambda m: chr(int(m.group(0)[1:], 16)), name).lower()
    return any(part in plain for part in SECRET_NAME_PARTS)


def redact_secrets(text: str) -> str:
    """``text`` with the value of every secret-looking query parameter replaced by ``***``."""
    if "=" not in text and "%3" not in text:
        return text

    def sub(m: re.Match[str]) -> str:
        if not m.group("value") or not _is_secret(m.group("name")):
            return m.group(0)
        return f"{m.group('lead')}{m.group('name')}{m.group('eq')}{REDACTED}"

    return _PARAM.sub(sub, text)


class SecretQueryFilter(logging.Filter):
    """Rewrites a record's message with ``redact_secrets`` (the record is formatted once, here)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError, KeyError):
            return True
        redacted = redact_secrets(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def install(loggers: tuple[str, ...] = ACCESS_LOGGERS) -> SecretQueryFilter:
    """Put one ``SecretQueryFilter`` on each of ``loggers`` (idempotent); returns it."""
    for name in loggers:
        logger = logging.getLogger(name)
        for existing in logger.filters:
            if isinstance(existing, SecretQueryFilter):
                break
        else:
            logger.addFilter(_FILTER)
    return _FILTER


_FILTER = SecretQueryFilter()

__all__ = ["ACCESS_LOGGERS", "SECRET_NAME_PARTS", "SecretQueryFilter", "install", "redact_secrets"]
