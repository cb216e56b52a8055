"""An app's chain: its deployment, loaded once, and one JSON-RPC client, both made on first use.

Every service that talks to the chain holds one `ChainClient` in its resources
(`offchain.platform.app.AppResources.chain`) and passes `deployment` and `rpc` down to its use
cases, instead of reading DEPLOYMENT_FILE or opening a client per request. Made lazily, so a
service starts (and says "not ready") while the deployment file or the node is still coming.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from offchain.chain.contracts import Deployment
from offchain.chain.jsonrpc import JsonRpc, RpcError
from offchain.platform.settings import ChainSettings, Settings


class ChainNotConfigured(RuntimeError):
    """DEPLOYMENT_FILE or CHAIN_RPC_URL is not set."""


class ChainClient:
    def __init__(self, settings: ChainSettings) -> None:
        self.settings = settings
        self._deployment: Deployment | None = None
        self._version: tuple[Path, int] | None = None
        self._rpc: JsonRpc | None = None

    @property
    def deployment(self) -> Deployment:
        """The deployment DEPLOYMENT_FILE names, read once (again only when the setting names
        another file or the file is rewritten, as a redeploy of the dev stack does)."""
        path = self.settings.deployment_file
        if not path:
            raise ChainNotConfigured("DEPLOYMENT_FILE is not set")
        version = (Path(path), Path(path).stat().st_mtime_ns)
        if self._deployment is None or self._version != version:
            self._deployment = Deployment.load(path)
            self._version = version
        return self._deployment

    @property
    def rpc(self) -> JsonRpc:
        """The app's one JSON-RPC client of CHAIN_RPC_URL (a keep-alive connection pool)."""
        if not self.settings.rpc_url:
            raise ChainNotConfigured("CHAIN_RPC_URL is not set")
        if self._rpc is None:
            self._rpc = JsonRpc(self.settings.endpoints, timeout_s=self.settings.rpc_timeout_s)  # failover
        return self._rpc

    async def aclose(self) -> None:
        if self._rpc is not None:
            await self._rpc.aclose()
            self._rpc = None


class _HasChain(Protocol):
    settings: Settings
    chain: ChainClient | None


def chain_of(resources: _HasChain) -> ChainClient:
    """The `ChainClient` of an app's resources (`offchain.platform.app.AppResources`)."""
    if resources.chain is None:
        resources.chain = ChainClient(resources.settings.chain)
    return resources.chain


# -- the chain as a request sees it ------------------------------------------------------------


def chain_for_request(request: Any) -> tuple[Deployment, JsonRpc]:
    """(deployment, rpc) of the app serving `request`; 503 when the settings name no chain."""
    from offchain.platform.problems import Problem

    resources = request.app.state.resources
    settings = resources.settings
    if not settings.chain.rpc_url or not settings.chain.deployment_file:
        raise Problem(503, "urn:caas:problem:dependency-unavailable", title="Chain not configured")
    chain = chain_of(resources)
    return chain.deployment, chain.rpc


@contextlib.contextmanager
def chain_unavailable_as_503() -> Iterator[None]:
    """A node that refuses or times out is the 503 these operations declare, not a 500."""
    from offchain.platform.problems import Problem

    try:
        yield
    except RpcError as error:
        if error.code is not None:  # the node answered: an error of the call, not of the node
            raise
        raise Problem(
            503,
            "urn:caas:problem:dependency-unavailable",
            title="Chain unavailable",
            detail=f"the chain node did not answer: {type(error.__cause__ or error).__name__}",
            headers={"Retry-After": "5"},
        ) from error
    except (aiohttp.ClientError, OSError, TimeoutError) as error:
        raise Problem(
            503,
            "urn:caas:problem:dependency-unavailable",
            title="Chain unavailable",
            detail=f"the chain node did not answer: {type(error).__name__}",
            headers={"Retry-After": "5"},
        ) from error
