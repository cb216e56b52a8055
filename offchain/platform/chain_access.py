"""The chain as a request sees it: the deployment and an async web3 client, made once per app,
and a node that does not answer turned into the 503 the operations declare."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import aiohttp
from fastapi import Request

from offchain.platform.problems import Problem

if TYPE_CHECKING:
    from web3 import AsyncWeb3

    from offchain.chain.contracts import Deployment


@contextlib.contextmanager
def chain_unavailable_as_503() -> Iterator[None]:
    """A node that refuses or times out is the 503 these operations declare, not a 500."""
    try:
        yield
    except (aiohttp.ClientError, OSError, TimeoutError) as error:
        raise Problem(
            503,
            "urn:caas:problem:dependency-unavailable",
            title="Chain unavailable",
            detail=f"the chain node did not answer: {type(error).__name__}",
            headers={"Retry-After": "5"},
        ) from error


def chain_of(request: Request) -> tuple[Deployment, AsyncWeb3]:
    """(Deployment, AsyncWeb3), made once per app (settings name both)."""
    state = request.app.state
    if getattr(state, "chain", None) is None:
        settings = request.app.state.settings
        if not settings.chain.rpc_url or not settings.chain.deployment_file:
            raise Problem(503, "urn:caas:problem:dependency-unavailable", title="Chain not configured")
        from web3 import AsyncHTTPProvider, AsyncWeb3

        from offchain.chain.contracts import Deployment

        state.chain = (
            Deployment.load(settings.chain.deployment_file),
            AsyncWeb3(
                AsyncHTTPProvider(
                    settings.chain.rpc_url, request_kwargs={"timeout": settings.chain.rpc_timeout_s}
                )
            ),
        )
    chain: tuple[Deployment, AsyncWeb3] = state.chain
    return chain
