"""/console: the three pages, their static bundle, the chain config, and the signer's agreement."""

# No `from __future__ import annotations`: FastAPI must see the dependency annotations.
import functools
import uuid
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from offchain.chain.client import chain_of
from offchain.persistence.credit import Origination
from offchain.persistence.models import Loan
from offchain.platform import auth
from offchain.platform.access import public
from offchain.platform.auth import Principal
from offchain.platform.deps import DatabaseDep
from offchain.platform.partner_errors import COMMON_ERRORS, LOAN_NOT_FOUND
from offchain.platform.problems import not_found
from offchain.platform.settings import Environment, Settings

HERE = Path(__file__).parent
STATIC = HERE / "static"
TEMPLATES = HERE / "templates"
PAGES = {"": "index.html", "signer": "signer.html", "auditor": "auditor.html", "operator": "operator.html"}

router = APIRouter(prefix="/console")
_page = public("a static page with no data: every API it calls authenticates the caller itself")
_config = public("public chain configuration: the RPC URL and contract addresses")
ReadLoans = Annotated[Principal, Depends(auth.require(auth.LOAN_READ, route_class="read"))]


def browser_rpc_url(settings: Settings) -> str:
    """The RPC URL the browser reads the chain through: CAAS_CONSOLE_RPC_URL; without it the
    chain's own URL in development only (a production node URL may carry an API key)."""
    if settings.chain.console_rpc_url:
        return settings.chain.console_rpc_url
    if settings.env is Environment.PRODUCTION:
        return ""
    return settings.chain.rpc_url or ""


def csp(rpc_url: str) -> str:
    parts = urlsplit(rpc_url)
    rpc_origin = f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self' {rpc_origin}".rstrip()
        + "; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


class ConsoleHeaders:
    """The consoles' security headers, on /console responses only. A plain ASGI middleware: every
    other gateway request passes straight through (BaseHTTPMiddleware would wrap each one)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path != "/console" and not path.startswith("/console/"):
            await self.app(scope, receive, send)
            return
        headers = {
            "Content-Security-Policy": csp(browser_rpc_url(scope["app"].state.settings)),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        }

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_headers = MutableHeaders(scope=message)
                for name, value in headers.items():
                    response_headers[name] = value
                response_headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)


@functools.cache
def _page_html(name: str) -> str:
    return (TEMPLATES / name).read_text(encoding="utf-8")


def _render(name: str) -> HTMLResponse:
    return HTMLResponse(_page_html(name))


@router.get("", include_in_schema=False, dependencies=[Depends(_page)])
@router.get("/", include_in_schema=False, dependencies=[Depends(_page)])
async def index() -> HTMLResponse:
    return _render("index.html")


@router.get("/signer", include_in_schema=False, dependencies=[Depends(_page)])
async def signer_page() -> HTMLResponse:
    return _render("signer.html")


@router.get("/auditor", include_in_schema=False, dependencies=[Depends(_page)])
async def auditor_page() -> HTMLResponse:
    return _render("auditor.html")


@router.get("/operator", include_in_schema=False, dependencies=[Depends(_page)])
async def operator_page() -> HTMLResponse:
    return _render("operator.html")


@router.get("/api/config", dependencies=[Depends(_config)], summary="The chain the consoles read")
async def config(request: Request) -> dict[str, Any]:
    settings = request.app.state.settings
    out: dict[str, Any] = {"rpc_url": browser_rpc_url(settings)}
    if settings.chain.deployment_file:
        deployment = chain_of(request.app.state.resources).deployment  # loaded once per app
        out.update(
            chain_id=deployment.chain_id,
            loan_book={
                "address": deployment.loan_book_address,
                "block": deployment.loan_book_block,
                "abi": deployment.loan_book_abi,
            },
            committee={
                "address": deployment.committee_address,
                "block": deployment.committee_block,
                "abi": deployment.committee_abi,
            },
        )
    return out


def mask(account_number: str) -> str:
    return "*" * max(len(account_number) - 4, 0) + account_number[-4:]


@router.get(
    "/api/loans/{loan_id}/agreement",
    responses={**LOAN_NOT_FOUND, **COMMON_ERRORS},
    summary="The loan's canonical agreement document as stored, with the payout account masked",
)
async def agreement(loan_id: uuid.UUID, principal: ReadLoans, db: DatabaseDep) -> JSONResponse:
    async with db.partner_session(principal.partner_id) as session:
        loan = await session.get(Loan, loan_id)
        origination = await session.get(Origination, loan_id)
        if loan is None or origination is None:
            raise not_found("loan", loan_id)
        document = origination.agreement
        return JSONResponse(
            {
                "loan_id": str(loan_id),
                "chain_loan_id": loan.chain_loan_id,
                "terms_hash": origination.terms_hash,
                "payout": {
                    "method": origination.payout_method,
                    "bank_code": origination.payout_bank_code,
                    "account_masked": mask(origination.payout_account_number),
                    "payout_ref": (document.get("payout") or {}).get("ref"),
                },
                "agreement": document,
            }
        )


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/console/static", StaticFiles(directory=STATIC, check_dir=False), name="console-static")
    app.add_middleware(ConsoleHeaders)
