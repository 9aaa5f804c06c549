"""`python -m runtime.api post-audit`: one entry in the `system` audit chain, through this
container's own API.

`rotate-keys` records each rotation this way: the API is not published and nginx never
proxies /internal, so the entry is posted from inside an api container, with the internal
token that very container accepts (the token never leaves it). The entry's JSON comes in
ORBIS_AUDIT_BODY; the last line printed is the HTTP status (204) or `failed <why>`.
"""

from __future__ import annotations

import urllib.error
import urllib.request

from runtime.api.settings import ApiSettings

AUDIT_BODY_VARIABLE = "ORBIS_AUDIT_BODY"
TIMEOUT_SECONDS = 10.0


def post_audit(settings: ApiSettings, body: str) -> str:
    token = settings.internal_tokens[0].get_secret_value()
    request = urllib.request.Request(
        f"http://127.0.0.1:{settings.port}/internal/audit",
        data=body.encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
            return str(response.status)
    except urllib.error.HTTPError as exc:
        return f"failed {exc.code}"
    except OSError as exc:
        return f"failed {type(exc).__name__}"
