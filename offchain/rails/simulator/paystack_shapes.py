"""Shapes of the simulated Paystack that its documentation shows and a test may ask for.

- fees: Paystack's local fee (1.5 % + NGN 100, the NGN 100 waived under NGN 2,500, capped at
  NGN 2,000), and who bears it: the merchant (`amount == requested_amount`, the fee kept out of
  the settlement) or the payer (`amount = requested_amount + fees`, as in the verify sample of
  paystack.com/docs/payments/verify-payments);
- metadata as Paystack echoes it: an object, a JSON string, "" (verify sample), 0 (webhook
  sample), null, or absent;
- a transaction stored verbatim (a documented sample), answered by verify as given;
- the single-step dedicated account assignment and its `dedicatedaccount.assign.success`.
"""

from __future__ import annotations

import json
from typing import Any

METADATA_FORMATS = ("object", "string", "empty", "zero", "null", "absent")
BEARERS = ("merchant", "customer")


class ShapeError(ValueError):
    """A control request asked for a shape that does not exist."""


def local_fee(amount: int) -> int:
    """Paystack's local fee on `amount` kobo."""
    return min(amount * 15 // 1000 + (10_000 if amount >= 250_000 else 0), 200_000)


def charged(requested: int, bearer: str) -> tuple[int, int]:
    """(amount charged, fees) for a charge of `requested` kobo with the fee borne by `bearer`."""
    if bearer not in BEARERS:
        raise ShapeError(f"bearer must be one of {', '.join(BEARERS)}")
    fees = local_fee(requested)
    return (requested + fees, fees) if bearer == "customer" else (requested, fees)


def shape_metadata(transaction: dict[str, Any], metadata: dict[str, Any], form: str) -> None:
    """Put `metadata` on the transaction in the given form (in place)."""
    if form not in METADATA_FORMATS:
        raise ShapeError(f"metadata_format must be one of {', '.join(METADATA_FORMATS)}")
    if metadata and form not in ("object", "string"):
        raise ShapeError(f"metadata_format {form} cannot carry metadata (loan_id, ...): use object or string")
    if form == "absent":
        transaction.pop("metadata", None)
        return
    transaction["metadata"] = {
        "object": metadata or "",  # Paystack echoes "" for none
        "string": json.dumps(metadata) if metadata else "",
        "empty": "",
        "zero": 0,
        "null": None,
    }[form]


def verbatim_transaction(body: dict[str, Any]) -> dict[str, Any]:
    """A transaction given in Paystack's verify shape (e.g. a documented sample), checked for the
    fields verify must have."""
    transaction = body.get("transaction")
    if not isinstance(transaction, dict):
        raise ShapeError("transaction: Paystack's verify `data` object is required")
    reference = transaction.get("reference")
    if not isinstance(reference, str) or not reference:
        raise ShapeError("transaction.reference is required")
    if not isinstance(transaction.get("id"), int) or not isinstance(transaction.get("amount"), int):
        raise ShapeError("transaction.id and transaction.amount must be integers")
    return dict(transaction)


def assignment_event(customer: dict[str, Any], account: dict[str, Any]) -> dict[str, Any]:
    """`dedicatedaccount.assign.success` data (paystack.com/docs/payments/webhooks)."""
    return {
        "customer": {
            **{
                k: customer.get(k)
                for k in ("id", "first_name", "last_name", "email", "customer_code", "phone")
            },
            "metadata": customer.get("metadata") or {},
            "risk_action": customer.get("risk_action", "default"),
            "international_format_phone": customer.get("phone"),
        },
        "dedicated_account": {
            **{k: v for k, v in account.items() if k != "customer"},
            "assignment": {**account["assignment"], "expired_at": None},
        },
        "identification": {"status": "success"},
    }
