"""Errors as `application/problem+json` (RFC 9457).

Every error body has `type, title, status, detail, instance`; validation errors add
`errors: [{"field", "reason"}]`. Use cases raise `Problem` for domain refusals; FastAPI's own
HTTP and validation errors and unexpected exceptions are converted here. 5xx bodies never carry
exception text: the request id in the body and the logs joins the two.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from offchain.platform.logging import get_logger

PROBLEM_JSON = "application/problem+json"
VALIDATION_ERROR = "urn:caas:problem:validation-error"
NOT_FOUND = "urn:caas:problem:not-found"

log = get_logger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


# --- the shapes, for the OpenAPI of every service (offchain.platform.openapi declares them) ------


class FieldError(BaseModel):
    field: str = Field(description="where: body.<path>, query.<name>, path.<name>, header.<name>")
    reason: str


class ProblemOut(BaseModel):
    """RFC 9457 problem details, as every error of every service answers them."""

    model_config = ConfigDict(extra="allow", title="Problem")  # extension members per type

    type: str = Field(description="a stable URI naming the kind of problem, e.g. urn:caas:problem:not-found")
    title: str
    status: int = Field(ge=400, le=599)
    detail: str | None = None
    instance: str = Field(description="the request path")
    request_id: str | None = Field(default=None, description="also in X-Request-ID and the service's logs")
    errors: list[FieldError] | None = Field(default=None, description="the fields at fault, when known")


class ValidationProblemOut(ProblemOut):
    """A request that failed validation: every field at fault, with why."""

    model_config = ConfigDict(extra="allow", title="ValidationProblem")

    errors: list[FieldError]


def answers(*statuses: int) -> Callable[[F], F]:
    """Mark a route dependency with the error statuses it can answer (401, 403, 429, ...): the
    OpenAPI of every route that depends on it declares them."""

    def mark(dependency: F) -> F:
        dependency.problem_statuses = tuple(statuses)  # type: ignore[attr-defined]
        return dependency

    return mark


class Problem(Exception):
    """A refusal with a stable type URI, e.g. `Problem(409, "urn:caas:problem:offer-expired")`."""

    def __init__(
        self,
        status: int,
        type: str = "about:blank",
        *,
        title: str | None = None,
        detail: str | None = None,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or title or type)
        self.status = status
        self.type = type
        self.title = title
        self.detail = detail
        self.errors = errors
        self.headers = headers
        self.extensions = extensions


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_response(
    request: Request,
    status: int,
    *,
    type: str = "about:blank",
    title: str | None = None,
    detail: str | None = None,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": type,
        # RFC 9457 §4.2.1: with about:blank the title is the status phrase
        "title": title if title and type != "about:blank" else _phrase(status),
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        **extensions,
    }
    if errors is not None:
        body["errors"] = errors
    request_id = getattr(request.state, "request_id", None)
    if request_id:
        body["request_id"] = request_id
        headers = {**(headers or {}), "X-Request-ID": request_id}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc)


def render_problem(request: Request, problem: Problem) -> JSONResponse:
    """The problem+json answer a raised Problem gets (also what an idempotency key stores)."""
    return problem_response(
        request,
        problem.status,
        type=problem.type,
        title=problem.title,
        detail=problem.detail,
        errors=problem.errors,
        headers=problem.headers,
        **problem.extensions,
    )


async def _problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return render_problem(request, exc)


def allowed_methods(request: Request) -> str | None:
    """Every method the app serves at this path (RFC 9110 §15.5.6: a 405 lists them all). A
    path served by several routes (GET and POST declared apart) gets the union; Starlette's
    own 405 names only the first route's."""
    from fastapi import routing
    from starlette.routing import Match

    methods: set[str] = set()
    for route in routing.iter_route_contexts(request.app.routes):
        try:
            match, _ = route.matches(request.scope)
        except Exception:  # noqa: S112 - a route kind that cannot be asked is not this path's
            continue
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods)) if methods else None


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else None
    headers = dict(exc.headers) if exc.headers else None
    if exc.status_code == 405 and (allow := allowed_methods(request)):
        headers = {**(headers or {}), "Allow": allow}
    # an HTTPException of ours may name its problem type (offchain.platform.body_limit)
    problem_type = getattr(exc, "problem_type", "about:blank")
    return problem_response(request, exc.status_code, type=problem_type, detail=detail, headers=headers)


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"field": _field(err["loc"]), "reason": err["msg"]} for err in exc.errors()]
    return problem_response(
        request,
        422,
        type=VALIDATION_ERROR,
        title="Request validation failed",
        detail=f"{len(errors)} field(s) failed validation",
        errors=errors,
    )


def _dependency_down(exc: BaseException) -> str | None:
    """Which dependency an exception says is unreachable (PostgreSQL, Redis), if that is what it is."""
    import asyncpg
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    # the plain asyncpg connections of the hot reads (Database.fetch_one) raise the driver's own errors
    driver_lost = (
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
        asyncpg.AdminShutdownError,
        asyncpg.CannotConnectNowError,
    )

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (RedisConnectionError, RedisTimeoutError)):
            return "redis"
        if isinstance(current, (OperationalError, InterfaceError, *driver_lost)) or (
            isinstance(current, DBAPIError) and current.connection_invalidated
        ):
            return "database"
        # no chain node answered: offchain.chain.jsonrpc.RpcUnavailable names itself (the platform
        # sits below the chain layer and does not import it)
        if getattr(current, "unreachable_dependency", None) == "chain":
            return "chain"
        if isinstance(current, (ConnectionRefusedError, ConnectionResetError)) or (
            isinstance(current, OSError) and current.errno in (111, 104, 110)
        ):
            return "network"
        current = current.__cause__ or current.__context__
    return None


def unexpected_response(request: Request, exc: BaseException) -> JSONResponse:
    """The answer to an exception nothing else handled, logged once (with the request id and,
    inside a span, the trace id the log processors add): a 503 when a dependency is down, a 500
    without exception text otherwise. Called by the request middleware, inside the request's
    context, which then swallows the exception: re-raised to uvicorn it would be logged a second
    time (without the request id) and the keep-alive connection closed under the client."""
    dependency = _dependency_down(exc)
    if dependency is not None:
        # Temporary by nature: tell the caller to come back, not that we are broken.
        log.warning(
            "http.dependency_unavailable", path=request.url.path, dependency=dependency, error=repr(exc)
        )
        return problem_response(
            request,
            503,
            type="urn:caas:problem:dependency-unavailable",
            title="Dependency unavailable",
            detail=f"A dependency ({dependency}) is unavailable; retry shortly.",
            headers={"Retry-After": "5"},
        )
    log.error("http.unhandled_exception", path=request.url.path, exc_info=exc)
    return problem_response(request, 500, detail="An unexpected error occurred.")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Only what escapes the request middleware itself reaches Starlette's ServerErrorMiddleware
    # (which re-raises after answering); everything else is answered by the middleware.
    return unexpected_response(request, exc)


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Problem, _problem)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(Exception, _unexpected)


def not_found(kind: str, resource_id: Any, *, detail: str | None = None) -> Problem:
    """The one 404: `kind` (payment, loan, ...) not found, or not this caller's to see."""
    return Problem(
        404,
        NOT_FOUND,
        title=f"{kind} not found",
        detail=detail or f"no {kind} {resource_id} for this partner",
    )
