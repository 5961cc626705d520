"""Users of a running local Label Studio: annotator accounts, their legacy tokens, their organization.

Label Studio's API does not expose another user's token, so it is read with the CLI
(``label-studio user --username``, ~3 s); users created through the API have no active
organization, so they are moved into the admin's (as an invite would).
"""

from __future__ import annotations

import re
from typing import Protocol

from .local import LabelStudioServerError

_TOKEN_LINE = re.compile(r"""['"]token['"]\s*:\s*['"]([^'"]+)['"]""")


class RunningServer(Protocol):
    """What these functions need of a ``LabelStudioServer``."""

    @property
    def url(self) -> str: ...

    @property
    def api_key(self) -> str: ...

    def run_cli(self, *args: str, timeout: float = 120.0) -> str: ...


def user_token_of(server: RunningServer, email: str) -> str:
    """Legacy API token of an existing user, read with ``label-studio user --username`` (~3 s)."""
    out = server.run_cli("user", "--username", email)
    m = _TOKEN_LINE.search(out)
    if not m:
        raise LabelStudioServerError(f"no token for user {email!r} in `label-studio user` output")
    return m.group(1)


def annotator_token(server: RunningServer, email: str) -> str:
    """Create user ``email`` (if new) in the admin's organization and return their legacy API token.

    The user is created through the SDK; the API does not expose another user's
    token, so it is read with ``label-studio user --username`` (~3 s).
    """
    import httpx
    from label_studio_sdk import LabelStudio  # lazy: starting a server needs no SDK

    client = LabelStudio(base_url=server.url, api_key=server.api_key, timeout=30, max_retries=0)
    try:
        if not any(u.email == email for u in client.users.list()):
            client.users.create(email=email, username=email)
    finally:
        client._client_wrapper.httpx_client.httpx_client.close()
    token = user_token_of(server, email)
    # Users created through POST /api/users/ have no active organization, and Label Studio sends
    # no webhook for their annotations; make the admin's organization theirs (as an invite would).
    with httpx.Client(base_url=server.url, timeout=30) as http:
        me = http.get("/api/current-user/whoami", headers={"Authorization": f"Token {token}"}).json()
        if me.get("active_organization") is None:
            admin = http.get("/api/current-user/whoami", headers={"Authorization": f"Token {server.api_key}"}).json()
            http.patch(
                f"/api/users/{int(me['id'])}/",
                json={"active_organization": admin.get("active_organization")},
                headers={"Authorization": f"Token {server.api_key}"},
            ).raise_for_status()
    return token
