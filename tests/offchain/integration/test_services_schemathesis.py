"""Every service against its own OpenAPI, with Schemathesis generating the requests (issue 15).

Each of the eleven apps of the port map is called through ASGI on the session's migrated
PostgreSQL and Redis, a freshly deployed LoanBook on Anvil and the simulator playing Paystack
and the SME platform, with schema-derived and schema-violating inputs (Schemathesis' coverage
and fuzzing phases), and every response goes through **all** of Schemathesis' checks: no 5xx, a
declared status code, its declared content type and body schema, headers, negative data
rejected, positive data accepted, ... (`case.call_and_validate`, no check excluded).

The credentials per operation come from fuzz_support.credentials: what its access rule asks for.
Examples per operation: CAAS_FUZZ_EXAMPLES (default in fuzz_support.EXAMPLES).
"""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fuzz_support import EXAMPLES, credentials, fuzz_app
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from identities import SERVICE_KEY, service_headers
from journey_support import chain_settings
from pydantic import SecretStr
from schemathesis.config import SchemathesisConfig
from schemathesis.core.parameters import ParameterLocation
from simulator_support import PAYSTACK_SECRET, SME_SECRET, ServerThread, free_port

from offchain.platform.settings import Settings
from offchain.rails.simulator.app import create_app as simulator_app
from offchain.rails.simulator.config import SimulatorConfig
from offchain.services.registry import SERVICES
from offchain.stack.composition import create_app

CLOSED = "http://127.0.0.1:1"  # nothing listens on port 1
HEALTH_PORT = free_port()


@pytest.fixture(scope="module")
def simulator_url() -> Iterator[str]:
    config = SimulatorConfig(
        paystack_secret_key=PAYSTACK_SECRET, sme_events_secret=SME_SECRET, gateway_url="http://127.0.0.1:9"
    )
    with ServerThread(simulator_app(config), free_port()) as simulator:
        yield simulator.url


@pytest.fixture(scope="module")
def fuzz_settings(
    database_url: str,
    redis_url: str,
    stream_prefix: str,
    anvil_url: str,
    simulator_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Settings:
    settings = chain_settings(
        database_url=database_url,
        redis_url=redis_url,
        stream_prefix=f"{stream_prefix}-fuzz-{uuid.uuid4().hex[:6]}",
        anvil_url=anvil_url,
        out_dir=Path(tmp_path_factory.mktemp("fuzz-chain")),
    )
    # Other services are reached at URLs of this run only (ports 8000-8010 may be anyone's): the
    # gateway's GET /v1/health asks the health app started here, the rest is closed.
    urls = {name: CLOSED for name in SERVICES} | {"health": f"http://127.0.0.1:{HEALTH_PORT}"}
    return settings.model_copy(
        update={
            "rails": settings.rails.model_copy(update={"simulator_url": simulator_url}),
            "services": settings.services.model_copy(update={"urls": urls, "probe_timeout_s": 1.0}),
            "internal": settings.internal.model_copy(update={"service_key": SecretStr(SERVICE_KEY)}),
        }
    )


@pytest.fixture(scope="module", autouse=True)
def health_server(fuzz_settings: Settings) -> Iterator[None]:
    with ServerThread(create_app("health", fuzz_settings), HEALTH_PORT):
        yield


# Schema-valid requests a use case may still refuse with a 400/422, for a rule no JSON Schema can
# state (one field against another, a value against what is stored): positive_data_acceptance
# takes these answers too, for these operations only. Every other check applies unchanged.
BUSINESS_REFUSALS: dict[str, tuple[tuple[str, ...], str]] = {
    "POST /v1/quotes": (("422",), "the affordability limits must be in the request's currency"),
    "POST /v1/bank-statements/analyze": (("422",), "a CSV statement's rows are read by its header row"),
    "GET /v1/applications": (("400",), "a cursor this API did not issue"),
    "GET /v1/loans": (("400",), "a cursor this API did not issue"),
    "GET /v1/events": (("400",), "a cursor this API did not issue"),
    "POST /v1/webhook-endpoints": (
        ("422",),
        "the URL must resolve to globally routable addresses only (offchain.platform.outbound)",
    ),
}
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]
# a body past the service's limit is refused before it is read (413), as schema-violating as any
REJECTED = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {"negative_data_rejection": {"expected-statuses": REJECTED}},
        "operations": [
            {
                "include-name": name,
                "checks": {"positive_data_acceptance": {"expected-statuses": [*ACCEPTED, *statuses]}},
            }
            for name, (statuses, _why) in BUSINESS_REFUSALS.items()
        ],
    }
)

HYPOTHESIS = hypothesis_settings(
    max_examples=EXAMPLES,
    deadline=None,
    # the same examples on every CI run (a red build means the code changed, not the dice);
    # `make fuzz` (CAAS_FUZZ_RANDOM=1) draws new ones every time, with more examples
    derandomize=os.environ.get("CAAS_FUZZ_RANDOM") != "1",
    # one app (and DB pool) per operation serves all its examples, on purpose
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)


def _leaves_credentials_out(case) -> bool:  # type: ignore[no-untyped-def]
    """A negative case of the headers that dropped Authorization means to send none: adding the
    identity back would turn it into a request the route may accept."""
    meta = case.meta
    if meta is None or not meta.is_negative_at(ParameterLocation.HEADER):
        return False
    return "authorization" not in {name.lower() for name in (case.headers or {})}


def _fuzz(service: str):  # type: ignore[no-untyped-def]
    fixture_name = f"{service}_schema"

    @pytest.fixture(name=fixture_name)
    def schema_fixture(fuzz_settings: Settings):  # type: ignore[no-untyped-def]
        # an internal port describes itself to CaaS services only (and to operators)
        return schemathesis.openapi.from_asgi(
            "/openapi.json",
            fuzz_app(service, fuzz_settings),
            config=CONFIG,
            headers=service_headers("orchestration", service, SERVICE_KEY),
        )

    schema = schemathesis.pytest.from_fixture(fixture_name)

    @schema.parametrize()
    @HYPOTHESIS
    def test(case, fuzz_settings):  # type: ignore[no-untyped-def]
        headers = credentials(service, case.operation.method, case.operation.path, fuzz_settings)
        if _leaves_credentials_out(case):
            headers = {}
        response = case.call_and_validate(headers=headers)
        STATS[service][str(response.status_code)] += 1

    test.__name__ = f"test_{service}__conforms_to_its_openapi"
    return schema_fixture, test


# requests per service and status code; CAAS_FUZZ_STATS=<path> writes them as JSON at the end
STATS: dict[str, Counter[str]] = defaultdict(Counter)


@pytest.fixture(scope="module", autouse=True)
def fuzz_stats() -> Iterator[None]:
    yield
    path = os.environ.get("CAAS_FUZZ_STATS")
    if path:
        Path(path).write_text(json.dumps({name: dict(counts) for name, counts in STATS.items()}, indent=1))


for _service in SERVICES:
    _fixture, _test = _fuzz(_service)
    globals()[f"_{_service}_schema_fixture"] = _fixture
    globals()[_test.__name__] = _test
