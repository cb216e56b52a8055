"""Who may read a service's description (`/openapi.json`, `/docs`).

The gateway's is the partner API's manual: anyone may read it. An internal port's describes
routes no partner may call; an attacker who reaches the port learns nothing there without an
identity either. Its `/openapi.json` answers a CaaS service or an operator with
`caas:operations:read`, through the same access guard as every other route (FastAPI's own docs
routes bypass app dependencies, so they are turned off and served here instead).
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from offchain.platform.access import public
from offchain.platform.auth import OPERATIONS_READ, service_or_operator

OPENAPI_PATH = "/openapi.json"


def install_api_description(app: FastAPI, *, public_description: bool) -> None:
    """Serve `app.openapi()` at /openapi.json (and Swagger UI at /docs when it is public)."""
    rule: Any = (
        public("the partner API's description: what any partner may read in its manual")
        if public_description
        else service_or_operator(OPERATIONS_READ)
    )

    @app.get(OPENAPI_PATH, include_in_schema=False, dependencies=[Depends(rule)])
    async def openapi_description() -> JSONResponse:
        return JSONResponse(app.openapi())

    if public_description:

        @app.get("/docs", include_in_schema=False, dependencies=[Depends(rule)])
        async def swagger_ui() -> HTMLResponse:
            return get_swagger_ui_html(openapi_url=OPENAPI_PATH, title=f"{app.title} - API")
