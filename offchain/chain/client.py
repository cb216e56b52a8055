"""An app's chain: its deployment, loaded once, and one JSON-RPC client, both made on first use.

Every service that talks to the chain holds one `ChainClient` in its resources
(`offchain.platform.app.AppResources.chain`) and passes `deployment` and `rpc` down to its use
cases, instead of reading DEPLOYMENT_FILE or opening a client per request. Made lazily, so a
service starts (and says "not ready") while the deployment file or the node is still coming.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from offchain.chain.contracts import Deployment
from offchain.chain.jsonrpc import JsonRpc
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
            self._rpc = JsonRpc(self.settings.rpc_url, timeout_s=self.settings.rpc_timeout_s)
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
