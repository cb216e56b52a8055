"""Who may call what, on every port: every route of every service x every kind of caller.

The routes come from the apps themselves (offchain.platform.access.routes_with_rules), so a new
route cannot escape: a route missing from RULES below fails the test, and so does a route whose
declared rule differs from the one written here. Each (route, identity) pair is then called for
real (the app with its lifespan, real PostgreSQL and Redis):

- an identity the rule does not admit gets 401 (no or unverifiable credentials) or 403 (a
  verified identity of the wrong kind or without the permission), problem+json, and the
  database is exactly as it was after all of them;
- an identity the rule admits gets past authentication (never 401/403, never a 500): the
  request carries a body that fails validation where the route takes one, so nothing runs
  that should not.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from identities import DEV_JWT_SECRET, SERVICE_KEY, operator_headers, service_headers
from permission_matrix_rules import BY_SERVICE, RULES, A, concrete, rule_for
from sqlalchemy import text

from offchain.persistence.migrate import upgrade
from offchain.platform import auth
from offchain.platform.access import AccessRule, Kind, routes_with_rules
from offchain.platform.settings import Settings
from offchain.services.registry import SERVICES
from offchain.stack.composition import create_app

PARTNER_A, PARTNER_B = uuid.uuid4(), uuid.uuid4()


@dataclass(frozen=True)
class Identity:
    name: str
    kind: str  # none | partner | operator | service
    permissions: frozenset[str] = frozenset()
    service: str | None = None
    # a service token for another service than the one called
    wrong_audience: bool = False

    def headers(self, target: str) -> dict[str, str]:
        if self.kind == "partner":
            partner = PARTNER_A if self.name.startswith("partner A") else PARTNER_B
            token = auth.issue_token(DEV_JWT_SECRET, partner_id=partner, permissions=tuple(self.permissions))
            return {"Authorization": f"Bearer {token}"}
        if self.kind == "operator":
            return operator_headers(permissions=tuple(self.permissions))
        if self.kind == "service":
            assert self.service is not None
            audience = "analytics" if self.wrong_audience and target != "analytics" else target
            if self.wrong_audience and target == "analytics":
                audience = "health"
            return service_headers(self.service, audience, SERVICE_KEY)
        return {}

    def admitted(self, rule: AccessRule) -> bool:
        if rule.kind in (Kind.PUBLIC, Kind.PROBE):
            return True
        partner_ok = self.kind == "partner" and rule.partner_permission in self.permissions
        operator_ok = self.kind == "operator" and (
            rule.operator_permission in self.permissions
            or (rule.operator_permission == A.OPERATIONS_READ and A.OPERATIONS_MANAGE in self.permissions)
        )
        service_ok = (
            self.kind == "service"
            and not self.wrong_audience
            and (rule.callers is None or self.service in rule.callers)
        )
        if rule.kind is Kind.PARTNER:
            return partner_ok
        if rule.kind is Kind.OPERATOR:
            return operator_ok
        if rule.kind is Kind.SHARED:
            return partner_ok or operator_ok
        if rule.kind is Kind.SERVICE:
            return service_ok
        if rule.kind is Kind.SERVICE_OR_OPERATOR:
            return service_ok or operator_ok
        raise AssertionError(rule)


IDENTITIES = [
    Identity("none", "none"),
    Identity("partner A", "partner", frozenset(A.ALL_PERMISSIONS)),
    Identity("partner B", "partner", frozenset(A.ALL_PERMISSIONS)),
    Identity("partner A, no permission", "partner", frozenset()),
    Identity("operator", "operator", frozenset(A.OPERATOR_PERMISSIONS)),
    Identity("operator, read only", "operator", frozenset({A.OPERATIONS_READ})),
    *[Identity(f"service {name}", "service", service=name) for name in SERVICES],
    Identity("service gateway, another audience", "service", service="gateway", wrong_audience=True),
]


def _routes() -> Iterator[tuple[str, str, str, AccessRule]]:
    settings = Settings(env="test", internal={"service_key": SERVICE_KEY})
    for name in SERVICES:
        for method, path, rule in routes_with_rules(create_app(name, settings)):
            yield name, method, path, rule


def test_every_route_of_every_service_has_the_rule_written_here() -> None:
    served = list(_routes())
    missing = sorted(
        (s, m, p) for s, m, p, _ in served if (s, m, p) not in BY_SERVICE and (m, p) not in RULES
    )
    assert not missing, f"routes with no rule in this matrix (declare one): {missing}"
    wrong = [
        (service, method, path, rule.describe(), rule_for(service, method, path).describe())
        for service, method, path, rule in served
        if _same(rule) != _same(rule_for(service, method, path))
    ]
    assert not wrong, f"declared rule differs from the matrix: {wrong}"
    unused = sorted(set(RULES) - {(m, p) for _, m, p, _ in served})
    assert not unused, f"rules for routes no service serves: {unused}"


def _same(rule: AccessRule) -> tuple[Any, ...]:
    return (
        rule.kind,
        rule.partner_permission,
        rule.operator_permission,
        rule.callers,
        rule.reason,
        rule.declared,
    )


TABLES_QUERY = text(
    "SELECT table_name FROM information_schema.tables "
    "WHERE table_schema = current_schema() AND table_name LIKE 'caas\\_%' AND table_type = 'BASE TABLE'"
)


def _snapshot(database_url: str) -> dict[str, int]:
    import psycopg2

    conn = psycopg2.connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute(str(TABLES_QUERY))
            tables = sorted(row[0] for row in cur.fetchall())
            counts = {}
            for table in tables:
                cur.execute(f'SELECT count(*) FROM "{table}"')
                counts[table] = cur.fetchone()[0]
        return counts
    finally:
        conn.close()


def _call(client: TestClient, method: str, path: str, headers: dict[str, str]) -> Any:
    # a body no route accepts (a JSON list where each wants an object): admitted callers are
    # stopped by validation, so no handler acts; routes without a body ignore it
    if method in ("POST", "PUT", "PATCH", "DELETE"):
        return client.request(
            method, path, headers={**headers, "content-type": "application/json"}, content=b"[]"
        )
    return client.request(method, path, headers=headers)


@pytest.fixture(scope="module")
def matrix_database(make_database: Any) -> str:
    """A database of its own: the apps' background jobs find nothing of other tests' to work on
    (a purge of old events, say) while the refusals are counted."""
    url = make_database()
    upgrade(url)
    return str(url)


@pytest.fixture
def matrix_settings(settings: Settings, matrix_database: str) -> Settings:
    # thousands of wrong credentials from one test client: the per-address limit of failed
    # authentications is its own test (test_trust_boundaries); here it would answer 429
    # streams of its own: no event another test left behind is consumed (and written) meanwhile
    return settings.model_copy(
        update={
            "limits": settings.limits.model_copy(update={"failed_auth": "1000000/minute"}),
            "events": settings.events.model_copy(update={"stream_prefix": f"matrix-{uuid.uuid4().hex[:8]}"}),
            "database": settings.database.model_copy(update={"url": matrix_database}),
        }
    )


def test_permission_matrix(matrix_settings: Settings, matrix_database: str) -> None:
    database_url = matrix_database
    refused: list[tuple[str, str, str, str, int]] = []
    admitted: list[tuple[str, str, str, str, int]] = []
    wrong: list[str] = []
    before = _snapshot(database_url)
    pairs = 0
    for service in SERVICES:
        app = create_app(service, matrix_settings)
        with TestClient(app, raise_server_exceptions=False) as client:
            # the spec's rule, not the route's own declaration (the test above compares the two)
            routes = [
                (method, path, rule_for(service, method, path)) for method, path, _ in routes_with_rules(app)
            ]
            # every refusal first: the database must not move under them
            for method, path, rule in routes:
                url = concrete(path)
                for identity in IDENTITIES:
                    if identity.admitted(rule):
                        continue
                    pairs += 1
                    response = _call(client, method, url, identity.headers(service))
                    refused.append((service, method, path, identity.name, response.status_code))
                    expected = {401} if identity.kind == "none" else {401, 403}
                    if response.status_code not in expected:
                        wrong.append(
                            f"{service} {method} {path} as {identity.name}: {response.status_code} (refusal)"
                        )
                    elif not response.headers["content-type"].startswith("application/problem+json"):
                        wrong.append(f"{service} {method} {path} as {identity.name}: not problem+json")
            after_refusals = _snapshot(database_url)
            if after_refusals != before:
                changed = {t: (before.get(t), n) for t, n in after_refusals.items() if before.get(t) != n}
                wrong.append(f"{service}: refused calls changed the database: {changed}")
            for method, path, rule in routes:
                url = concrete(path)
                for identity in IDENTITIES:
                    if not identity.admitted(rule):
                        continue
                    pairs += 1
                    response = _call(client, method, url, identity.headers(service))
                    admitted.append((service, method, path, identity.name, response.status_code))
                    if response.status_code in (401, 403) or (
                        response.status_code >= 500 and response.status_code != 503
                    ):
                        if rule.kind is Kind.PUBLIC and response.status_code == 401:
                            # a provider signature route answers 401 to an unsigned body, token or not
                            continue
                        wrong.append(
                            f"{service} {method} {path} as {identity.name}: {response.status_code} (admitted) "
                            f"{response.text[:200]}"
                        )
            before = _snapshot(database_url)
    assert not wrong, "\n".join(wrong)
    routes_total = sum(1 for _ in _routes())
    print(
        f"\npermission matrix: {routes_total} routes x {len(IDENTITIES)} identities = {pairs} calls "
        f"({len(refused)} refused, {len(admitted)} admitted)"
    )
    assert pairs == routes_total * len(IDENTITIES)


def test_public_routes_ignore_tokens_and_answer_on_the_signature(matrix_settings: Settings) -> None:
    app = create_app("gateway", matrix_settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        for path in ("/v1/webhooks/paystack", "/v1/events/sme"):
            answers = {
                identity.name: client.post(
                    path, content=b"{}", headers=identity.headers("gateway")
                ).status_code
                for identity in IDENTITIES
            }
            assert set(answers.values()) == {401}, answers  # unsigned: refused whoever sends it


def test_a_service_token_of_another_deployment_is_refused(matrix_settings: Settings) -> None:
    app = create_app("orchestration", matrix_settings)
    foreign = service_headers("gateway", "orchestration", key="another-deployments-service-key-000000")
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/v1/tx-intents/x", headers=foreign)
    assert response.status_code == 401 and response.json()["type"] == "urn:caas:problem:unauthenticated"
