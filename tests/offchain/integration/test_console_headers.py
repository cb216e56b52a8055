"""The consoles' security headers are on /console answers only, and the chain URL they hand to
any browser is one fit for the public."""

from __future__ import annotations

from fastapi.testclient import TestClient

from offchain.platform.settings import Environment, Settings
from offchain.services.gateway.console.routes import browser_rpc_url
from offchain.stack.composition import create_app

NODE = "https://base-sepolia.example-rpc.io/v2/SECRET-API-KEY"


def test_console_answers_carry_the_csp_and_api_answers_do_not(settings: Settings) -> None:
    configured = settings.model_copy(
        update={"chain": settings.chain.model_copy(update={"rpc_url": "http://127.0.0.1:8545"})}
    )
    with TestClient(create_app("gateway", configured)) as client:
        page = client.get("/console/signer")
        assert page.status_code == 200
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "connect-src 'self' http://127.0.0.1:8545" in policy
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["cache-control"] == "no-store"
        config = client.get("/console/api/config")
        assert config.json()["rpc_url"] == "http://127.0.0.1:8545"
        assert "content-security-policy" in config.headers
        api = client.get("/v1/loans")  # any non-console answer (401 here)
        assert "content-security-policy" not in api.headers


def test_the_browser_gets_the_console_url_or_in_production_no_node_url(settings: Settings) -> None:
    def with_chain(env: str, **chain: str) -> Settings:
        return settings.model_copy(
            update={"env": Environment(env), "chain": settings.chain.model_copy(update=chain)}
        )

    assert browser_rpc_url(with_chain("development", rpc_url=NODE)) == NODE
    # a production node URL may carry its API key: never handed out unless named for browsers
    assert browser_rpc_url(with_chain("production", rpc_url=NODE)) == ""
    public = "https://public-node.example.org"
    assert browser_rpc_url(with_chain("production", rpc_url=NODE, console_rpc_url=public)) == public
