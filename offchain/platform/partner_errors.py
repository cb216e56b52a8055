"""The error answers partner routes declare in the OpenAPI (problem+json, RFC 9457)."""

from __future__ import annotations

from typing import Any

PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or invalid bearer token", **PROBLEM},
    403: {"description": "the token lacks the permission this call needs", **PROBLEM},
    # its shape (ValidationProblem) comes with every error's from offchain.platform.openapi
    422: {"description": "a field failed validation (errors: [{field, reason}])", **PROBLEM},
    429: {"description": "rate limit exceeded (see RateLimit-* and Retry-After)", **PROBLEM},
}
# Answers beyond COMMON_ERRORS, declared on the operations that give them.
BAD_BODY: dict[int | str, dict[str, Any]] = {
    400: {"description": "the body is not JSON (or not UTF-8), or a bad Idempotency-Key", **PROBLEM}
}
BAD_CURSOR: dict[int | str, dict[str, Any]] = {
    400: {"description": "a cursor this API did not issue", **PROBLEM}
}
LOAN_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such loan for this partner", **PROBLEM}
}
CHAIN_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"description": "the chain (node or deployment) is not reachable", **PROBLEM}
}
