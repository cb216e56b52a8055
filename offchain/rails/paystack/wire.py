"""Paystack's JSON as the backend reads it: any depth without recursion, and storable.

Webhook bodies and REST answers carry `metadata` exactly as the integration (or a borrower's
checkout) set it, so a validly signed `charge.success` may nest it arbitrarily deep. The
standard library's decoder recurses, and a body nested ~1,000 deep raises RecursionError (a
500, which Paystack retries for 72 hours while the payment is never recorded). Here the body is
read by ijson's event parser (yajl, iterative): containers nested deeper than `MAX_DEPTH` are
replaced by a marker string and everything above them is kept. No fact the backend uses (event,
reference, amount, currency, status, fees, metadata.loan_id, the receiving account) sits deeper
than four levels.

PostgreSQL cannot store U+0000 in text or jsonb: `storable()` replaces it (in keys and values)
before a payload goes into a table. References are checked separately (`reference_problem`):
a reference Paystack could never have issued is refused, not rewritten.
"""

from __future__ import annotations

import unicodedata
from typing import Any

import ijson

MAX_DEPTH = 32
DROPPED = f"[dropped: nested deeper than {MAX_DEPTH} levels]"
NUL_REPLACEMENT = "\ufffd"
MAX_REFERENCE = 200  # caas_payments.provider_reference


class UnreadableJson(ValueError):
    """The bytes are not one JSON value."""


def decode(raw: bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """One JSON value from `raw`, containers below `max_depth` replaced by `DROPPED`."""
    stack: list[Any] = []  # open containers, innermost last
    keys: list[str | None] = []  # the pending key of each open object (None for arrays)
    skipping = 0  # > 0 while inside a dropped container: its nesting depth
    result: Any = None
    done = False

    def put(value: Any) -> None:
        nonlocal result, done
        if not stack:
            result, done = value, True
        elif isinstance(stack[-1], list):
            stack[-1].append(value)
        else:
            stack[-1][keys[-1]] = value

    try:
        for event, value in ijson.basic_parse(raw, use_float=True):
            if skipping:
                if event in ("start_map", "start_array"):
                    skipping += 1
                elif event in ("end_map", "end_array"):
                    skipping -= 1
                    if not skipping:
                        put(DROPPED)
                continue
            if event in ("start_map", "start_array"):
                if len(stack) >= max_depth:
                    skipping = 1
                    continue
                stack.append({} if event == "start_map" else [])
                keys.append(None)
            elif event in ("end_map", "end_array"):
                keys.pop()
                put(stack.pop())
            elif event == "map_key":
                keys[-1] = value
            else:
                put(value)
    except ijson.JSONError as error:
        raise UnreadableJson(f"not JSON: {error}") from None
    except UnicodeDecodeError:
        raise UnreadableJson("not UTF-8") from None
    if not done:
        raise UnreadableJson("no JSON value")
    return result


def storable(value: Any) -> Any:
    """`value` with every U+0000 (keys and strings) replaced, as PostgreSQL can store it.

    Iterative like `decode`: a decoded value is at most MAX_DEPTH deep, but callers may hand
    anything in."""
    if isinstance(value, str):
        return value.replace("\x00", NUL_REPLACEMENT) if "\x00" in value else value
    if not isinstance(value, dict | list):
        return value
    root: Any = {} if isinstance(value, dict) else []
    pending: list[tuple[Any, Any]] = [(value, root)]
    while pending:
        source, target = pending.pop()
        items = source.items() if isinstance(source, dict) else enumerate(source)
        for key, item in items:
            if isinstance(item, dict | list):
                copy: Any = {} if isinstance(item, dict) else []
                pending.append((item, copy))
            elif isinstance(item, str) and "\x00" in item:
                copy = item.replace("\x00", NUL_REPLACEMENT)
            else:
                copy = item
            if isinstance(target, dict):
                clean_key = key.replace("\x00", NUL_REPLACEMENT) if isinstance(key, str) else key
                target[clean_key] = copy
            else:
                target.append(copy)
    return root


def reference_problem(reference: Any) -> str | None:
    """Why `reference` cannot be a reference Paystack issued (None: it can).

    Paystack's references are letters, digits and a few punctuation marks (theirs are
    alphanumeric; an integration's may add `-`, `.`, `=`, `_`). Deliberately lenient beyond
    that -- refusing a real payment's reference would strand the money -- it refuses only what
    no reference can hold: nothing, more than 200 characters, control characters (U+0000
    included) and the replacement character.
    """
    if not isinstance(reference, str) or not reference.strip():
        return "the reference is missing"
    if len(reference) > MAX_REFERENCE:
        return f"the reference is longer than {MAX_REFERENCE} characters"
    for char in reference:
        if char == NUL_REPLACEMENT or unicodedata.category(char) in ("Cc", "Cs"):
            return f"the reference holds U+{ord(char):04X}, which no Paystack reference has"
    return None
