"""Analytics API (`credit:analytics:read`), served by analytics:8009 and the gateway."""

# No `from __future__ import annotations`: FastAPI must see the dependency types.

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, Response

from offchain.domain import analytics
from offchain.platform import auth
from offchain.platform.auth import Principal
from offchain.platform.deps import DatabaseDep
from offchain.services.analytics import usecases
from offchain.services.analytics.schemas import PortfolioOut

router = APIRouter(prefix="/v1", tags=["analytics"])

Read = Annotated[Principal, Depends(auth.require(auth.ANALYTICS_READ))]
PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or invalid bearer token", **PROBLEM},
    403: {"description": "the token lacks credit:analytics:read", **PROBLEM},
    422: {"description": "a field failed validation (errors: [{field, reason}])", **PROBLEM},
}


@router.get(
    "/analytics/portfolio",
    response_model=PortfolioOut,
    responses={
        200: {
            "description": "JSON (format=json), CSV (format=csv) or an SVG chart (format=svg)",
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "image/svg+xml": {"schema": {"type": "string"}},
            },
        },
        **ERRORS,
    },
    summary="Portfolio figures of the calling partner: approvals, volumes, PAR by balance, vintages",
)
async def portfolio(
    principal: Read,
    db: DatabaseDep,
    format: Annotated[Literal["json", "csv", "svg"], Query()] = "json",
    chart: Annotated[Literal["par", "vintage"], Query()] = "par",
) -> Response:
    async with db.partner_session(principal.partner_id) as session:
        figures = await usecases.portfolio(session=session)
    scope = str(principal.partner_id)
    if format == "csv":
        return Response(
            analytics.to_csv(figures, scope=scope),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="portfolio.csv"'},
        )
    if format == "svg":
        svg = analytics.par_svg(figures) if chart == "par" else analytics.vintage_svg(figures)
        return Response(svg, media_type="image/svg+xml")
    return JSONResponse({"partner_id": scope, **figures})
