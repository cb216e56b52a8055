"""The error side of every service's OpenAPI, declared once for all routes.

Every error answer of every service is `application/problem+json` (offchain.platform.problems).
Routes declare the refusals of their own use case (404, 409, ...); this hook adds what every
route of a kind can answer, and gives every 4xx/5xx response the `Problem` schema
(`ValidationProblem`, with `errors: [{field, reason}]`, for 422):

- 500 (an unexpected error; the body names the request id the logs carry) and 503 (a dependency
  is down, or not configured) on every /v1 operation;
- 400 on an operation with a JSON body (it could not be decoded: not JSON, not UTF-8, too deep),
  and 413 (larger than the body limit);
- 422 on an operation with any parameter or body;
- 401 / 403 / 429 on every operation that needs an identity (its access rule,
  offchain.platform.access), and whatever a dependency marked `@problems.answers(...)` can answer.

A route's own declaration of a status (its description, or its own schema) is kept.

Numbers come out exact: FastAPI passes the document through its OpenAPI model, whose numeric
bounds are floats, so `le=2**96 - 1` came out as 7.922816251426434e+28 (= 2**96: a client or a
fuzzer at the bound sent one kobo too many). The component schemas' numbers are restored from
the models' own JSON Schema, and whole-number floats elsewhere are written as integers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI, routing
from fastapi.dependencies.models import Dependant

from offchain.platform.problems import PROBLEM_JSON, ProblemOut, ValidationProblemOut

DESCRIPTIONS = {
    400: "the request could not be decoded (not JSON, not UTF-8, nested too deep)",
    401: "missing or invalid credentials",
    403: "the credentials lack a permission this call needs",
    413: "the request body is larger than the service accepts (offchain.platform.body_limit)",
    422: "a field failed validation (errors: [{field, reason}])",
    429: "rate limit exceeded (see RateLimit-* and Retry-After)",
    500: "an unexpected error; the body's request_id is in the service's logs",
    503: "a dependency (database, Redis, chain, rail) is unavailable; retry after Retry-After",
}
_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_VALIDATION_REF = {"$ref": "#/components/schemas/ValidationProblem"}
# FastAPI's own 422 shape, replaced by ours (its handler is replaced too: problems._validation)
_FASTAPI_VALIDATION = "#/components/schemas/HTTPValidationError"


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _calls(sub)


def _has_parameters(dependant: Dependant) -> bool:
    if dependant.path_params or dependant.query_params or dependant.header_params:
        return True
    if dependant.cookie_params or dependant.body_params:
        return True
    return any(_has_parameters(sub) for sub in dependant.dependencies)


def statuses_of(route: Any) -> set[int]:
    """The error statuses a route can answer whatever its use case does."""
    from offchain.platform.access import Kind, rule_of

    found: set[int] = set()
    path = route.path_format
    if path.startswith("/v1/"):
        found |= {500, 503}
    if route.body_field is not None:
        found |= {400, 413}  # not decodable; larger than the service's body limit
    if _has_parameters(route.dependant):
        found.add(422)
    # who may call it (the guard's own rule): any identity can be missing or wrong (401), short
    # of what the route needs (403), or come from an address refused too often (429); partner
    # calls are also counted against the partner's quota (429)
    if rule_of(route).kind not in (Kind.PUBLIC, Kind.PROBE):
        found |= {401, 403, 429}
    for call in _calls(route.dependant):
        found.update(getattr(call, "problem_statuses", ()))
    return found


def _api_routes(app: FastAPI) -> Iterator[Any]:
    for context in routing.iter_route_contexts(app.routes):
        if isinstance(context.original_route, routing.APIRoute) and context.include_in_schema:
            yield context


def _is_ours_to_shape(response: dict[str, Any]) -> bool:
    """Whether a declared error response still needs its Problem schema: no content, an empty
    problem+json entry, or FastAPI's own validation error."""
    content = response.get("content") or {}
    if not content:
        return True
    if set(content) - {PROBLEM_JSON, "application/json"}:
        return False
    problem = content.get(PROBLEM_JSON)
    if problem is not None and problem.get("schema"):
        return False
    plain = content.get("application/json")
    if plain is not None and plain.get("schema", {}).get("$ref") not in (None, _FASTAPI_VALIDATION):
        return False
    return True


def _components(schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (ProblemOut, ValidationProblemOut):
        shape = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in shape.pop("$defs", {}).items():
            components.setdefault(name, definition)
        components[shape.get("title", model.__name__)] = shape
    text = str(schema.get("paths", {}))
    for unused in ("HTTPValidationError", "ValidationError"):
        if f"#/components/schemas/{unused}" not in text:
            components.pop(unused, None)


def _restore(generated: Any, exact: Any) -> Any:
    """`generated` with the numbers `exact` spells (same shape), and integral floats as ints."""
    if isinstance(generated, dict):
        within = exact if isinstance(exact, dict) else {}
        return {key: _restore(value, within.get(key)) for key, value in generated.items()}
    if isinstance(generated, list):
        items = exact if isinstance(exact, list) and len(exact) == len(generated) else [None] * len(generated)
        return [_restore(value, other) for value, other in zip(generated, items, strict=True)]
    if isinstance(generated, float):
        if isinstance(exact, int) and not isinstance(exact, bool) and float(exact) == generated:
            return exact
        if generated.is_integer() and abs(generated) < 2**53:
            return int(generated)
    return generated


def _exact_definitions(app: FastAPI) -> dict[str, Any]:
    """The component schemas as pydantic writes them (before FastAPI's float coercion)."""
    from fastapi.openapi import utils

    fields = utils.get_fields_from_routes(list(app.routes))
    model_name_map = utils.get_model_name_map(utils.get_flat_models_from_fields(fields, known_models=set()))
    _, definitions = utils.get_definitions(
        fields=fields,
        model_name_map=model_name_map,
        separate_input_output_schemas=app.separate_input_output_schemas,
    )
    return definitions


def exact_numbers(app: FastAPI, schema: dict[str, Any]) -> dict[str, Any]:
    try:
        definitions = _exact_definitions(app)
    except (AttributeError, TypeError, ImportError):  # FastAPI's internals moved: floats stay
        definitions = {}
    components = schema.get("components", {})
    if "schemas" in components:
        components["schemas"] = _restore(components["schemas"], definitions)
    schema["paths"] = _restore(schema.get("paths", {}), None)
    return schema


def shape_errors(app: FastAPI, schema: dict[str, Any]) -> dict[str, Any]:
    """Declare and shape the error responses of every operation in `schema` (in place)."""
    for route in _api_routes(app):
        operations = schema.get("paths", {}).get(route.path_format, {})
        for method in route.methods or ():
            operation = operations.get(method.lower())
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            for status in statuses_of(route):
                responses.setdefault(str(status), {"description": DESCRIPTIONS[status]})
            for code, response in responses.items():
                if not code.isdigit() or int(code) < 400 or not _is_ours_to_shape(response):
                    continue
                ref = _VALIDATION_REF if code == "422" else _PROBLEM_REF
                description = response.get("description")
                if not description or description == "Validation Error":
                    description = DESCRIPTIONS.get(int(code), "refused")
                response["description"] = description
                response["content"] = {PROBLEM_JSON: {"schema": dict(ref)}}
    _components(schema)
    return schema


def install_error_schemas(app: FastAPI) -> None:
    """Make `app.openapi()` return the shaped document (FastAPI caches it; so do we)."""
    generate = app.openapi
    shaped: dict[int, dict[str, Any]] = {}

    def openapi() -> dict[str, Any]:
        schema = generate()
        if id(schema) not in shaped:  # FastAPI builds a new document when its routes change
            shaped.clear()
            shaped[id(schema)] = shape_errors(app, exact_numbers(app, schema))
        return shaped[id(schema)]

    app.openapi = openapi  # type: ignore[method-assign]
