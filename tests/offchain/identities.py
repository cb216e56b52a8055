"""Who calls in the tests: service tokens with the session's service key, operator tokens.

Imported as `identities` (tests/offchain is on sys.path through its conftest).
"""

from __future__ import annotations

import uuid

from offchain.platform.auth import OPERATOR_PERMISSIONS, issue_operator_token
from offchain.platform.service_auth import issue_service_token

# The tests' service key (offchain.platform.service_auth): a per-session secret, as `caas up`
# generates one per stack. conftest's `settings` fixture carries it.
SERVICE_KEY = f"test-service-key-{uuid.uuid4().hex}"
DEV_JWT_SECRET = "dev-jwt-secret-local-development-only-0001"


def service_headers(caller: str, target: str, key: str = SERVICE_KEY) -> dict[str, str]:
    """What service `caller` sends to service `target` (a token valid for 300 s)."""
    token = issue_service_token(key, caller=caller, audience=target, ttl_s=300)
    return {"Authorization": f"Bearer {token}"}


def operator_headers(
    subject: str = "ops-alice",
    permissions: tuple[str, ...] = OPERATOR_PERMISSIONS,
    secret: str = DEV_JWT_SECRET,
) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {issue_operator_token(secret, subject=subject, permissions=permissions)}"
    }
