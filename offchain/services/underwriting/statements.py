"""The upload adapter: a statement as JSON or CSV bytes into validated transactions.

JSON: `{"transactions": [...]}` or the bare list. CSV: a header row naming at least `date` and
`amount` (`balance`, `description` optional; other columns ignored), UTF-8, amounts in integer
minor units. Field errors name the row as `transactions[i]` (JSON) or `rows[i]` (CSV data rows,
counted from 0 after the header).
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from pydantic import ValidationError

from offchain.domain.underwriting.bank_statement import (
    MAX_TRANSACTIONS as MAX_LINES,
)
from offchain.domain.underwriting.bank_statement import (
    StatementError,
    Transaction,
    parse_transactions,
)
from offchain.services.underwriting.schemas import TransactionIn

MAX_UPLOAD_BYTES = 5 * 1024 * 1024
JSON_TYPES = ("application/json",)
CSV_TYPES = ("text/csv", "application/csv")


class UnsupportedMediaType(ValueError):
    pass


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _json_records(body: bytes) -> Any:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StatementError([{"field": "body", "reason": f"not valid JSON: {exc}"}]) from None
    except RecursionError:  # json.loads gives up past ~1,000 levels: a statement is 3 deep
        raise StatementError([{"field": "body", "reason": "JSON nested too deep"}]) from None
    records = data.get("transactions") if isinstance(data, dict) else data
    if not isinstance(records, list):
        return records  # parse_transactions says what is wrong with it
    # the lines as the JSON schema declares them (types, bounds, NUL-free text), then the parser's rules
    lines = []
    errors: list[dict[str, str]] = []
    for index, record in enumerate(records[: MAX_LINES + 1]):
        try:
            lines.append(TransactionIn.model_validate(record).record())
        except ValidationError as exc:
            errors += [
                {
                    "field": ".".join(["transactions", f"[{index}]", *map(str, e["loc"])]).replace(".[", "["),
                    "reason": e["msg"],
                }
                for e in exc.errors()
            ]
    if errors:
        raise StatementError(errors[:100])
    return lines


def _csv_records(body: bytes) -> list[dict[str, str]]:
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise StatementError([{"field": "body", "reason": "CSV must be UTF-8"}]) from None
    reader = csv.DictReader(io.StringIO(text))
    header = [name.strip().lower() for name in (reader.fieldnames or [])]
    missing = [name for name in ("date", "amount") if name not in header]
    if missing:
        raise StatementError([{"field": "header", "reason": f"missing column(s): {', '.join(missing)}"}])
    rows = []
    try:
        for row in reader:
            rows.append({(key or "").strip().lower(): value for key, value in row.items() if key is not None})
    except csv.Error as exc:
        raise StatementError([{"field": "body", "reason": f"malformed CSV: {exc}"}]) from None
    return rows


def parse_upload(body: bytes, content_type: str | None) -> list[Transaction]:
    kind = media_type(content_type)
    if kind in JSON_TYPES:
        return parse_transactions(_json_records(body), field="transactions")
    if kind in CSV_TYPES:
        return parse_transactions(_csv_records(body), field="rows")
    raise UnsupportedMediaType(f"send {' or '.join(JSON_TYPES + CSV_TYPES)}, not {kind or 'no content type'}")
