"""Paystack's resources as typed models: what the REST API answers and what webhooks carry.

Only the fields the backend relies on are declared; Paystack adds fields freely, so every model
keeps unknown ones (`extra="allow"`) rather than failing on them. Amounts are integers in the
currency's minor unit (kobo for NGN), as Paystack sends them (some of its events send them as
digit strings, read as the same integer); a fractional amount is refused.

A charge (`Transaction`) is refused only when the facts money depends on are unreadable (id,
reference, amount, currency, status). Everything around them -- metadata, fees, the customer,
the authorization, the dedicated account -- is read when it has a known shape and left out
when not: refusing a charge over its decoration would leave real money unrecorded (Paystack
retries a refused webhook for 72 hours, every time with the same body). Shapes Paystack
documents: tests/offchain/fixtures/paystack/.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
)

T = TypeVar("T")


def _minor_units(value: Any) -> Any:
    # Paystack's refund and bank-transfer events send amounts as digit strings ("10000")
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return value


MinorUnits = Annotated[int, BeforeValidator(_minor_units), Field(strict=True)]


def _or_none(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    try:
        return handler(value)
    except ValidationError:
        return None


# An optional part of a resource: its documented shape, or None when it has another one.
Lenient = Annotated[T | None, WrapValidator(_or_none)]


class _Resource(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)


class TransferStatus(StrEnum):
    PENDING = "pending"
    OTP = "otp"
    RECEIVED = "received"
    SUCCESS = "success"
    FAILED = "failed"
    REVERSED = "reversed"
    ABANDONED = "abandoned"
    BLOCKED = "blocked"
    REJECTED = "rejected"

    @property
    def conclusive(self) -> bool:
        """Paystack is done with the transfer: only now may a payout be retried (never before)."""
        return self not in (TransferStatus.PENDING, TransferStatus.OTP, TransferStatus.RECEIVED)

    @property
    def paid_out(self) -> bool:
        return self is TransferStatus.SUCCESS


class RecipientDetails(_Resource):
    account_number: str | None = None
    account_name: str | None = None
    bank_code: str | None = None
    bank_name: str | None = None
    authorization_code: str | None = None


class Recipient(_Resource):
    id: int
    recipient_code: str
    type: str
    name: str
    currency: str
    active: bool = True
    details: RecipientDetails = Field(default_factory=RecipientDetails)
    metadata: Lenient[dict[str, Any]] = None


class Transfer(_Resource):
    id: int
    transfer_code: str
    reference: str
    amount: MinorUnits
    currency: str
    status: TransferStatus
    source: str = "balance"
    reason: str | None = None
    # an integer id in the initiate answer, the whole recipient in verify answers and webhooks
    recipient: Recipient | int | None = None
    failures: Any = None
    transferred_at: str | None = None
    created_at: str | None = Field(default=None, alias="createdAt")
    updated_at: str | None = Field(default=None, alias="updatedAt")

    @property
    def recipient_code(self) -> str | None:
        return self.recipient.recipient_code if isinstance(self.recipient, Recipient) else None


class Authorization(_Resource):
    authorization_code: str | None = None
    channel: str | None = None
    card_type: str | None = None
    bank: str | None = None
    brand: str | None = None
    reusable: bool | None = None
    # dedicated_nuban: who paid, and which of our virtual accounts received it
    sender_name: str | None = None
    sender_bank: str | None = None
    sender_bank_account_number: str | None = None
    receiver_bank_account_number: str | None = None
    receiver_bank: str | None = None
    narration: str | None = None


class Customer(_Resource):
    id: int
    customer_code: str
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    metadata: Lenient[dict[str, Any]] = None


class Payer(_Resource):
    """The customer as a charge embeds it: every field optional (nothing money depends on)."""

    id: Lenient[int] = None
    customer_code: Lenient[str] = None
    email: Lenient[str] = None
    first_name: Lenient[str] = None
    last_name: Lenient[str] = None
    phone: Lenient[str] = None
    metadata: Lenient[dict[str, Any]] = None


class Bank(_Resource):
    name: str
    id: int | None = None
    slug: str | None = None


class DedicatedAccountRef(_Resource):
    """The dedicated account a charge was paid into, as the charge embeds it."""

    id: int | None = None
    account_number: str | None = None
    account_name: str | None = None


class DedicatedAccount(_Resource):
    id: int
    account_number: str
    account_name: str | None = None
    bank: Bank
    currency: str = "NGN"
    active: bool = True
    assigned: bool = True
    customer: Customer | None = None


class Transaction(_Resource):
    """A charge (incoming payment): `GET /transaction/verify/{reference}` and `charge.success`."""

    id: int
    reference: str
    amount: MinorUnits
    currency: str
    status: str
    channel: Lenient[str] = None
    gateway_response: Lenient[str] = None
    paid_at: Lenient[str] = None
    created_at: Lenient[str] = None
    # Paystack echoes what the integration sent: an object, a JSON string, "", 0 or null
    metadata: dict[str, Any] = Field(default_factory=dict)
    authorization: Lenient[Authorization] = None
    customer: Lenient[Payer] = None
    dedicated_account: Lenient[DedicatedAccountRef] = None
    # what the integration asked for; `amount` is what the payer was charged (more, when the
    # payer bears Paystack's fees); see domain.money_movement.paystack_charge_figures
    requested_amount: Lenient[MinorUnits] = None
    # Paystack's fee on the charge (null on some events): kept out of the payer's money
    fees: Lenient[MinorUnits] = None

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata_object(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return value
        if isinstance(value, str) and value.strip():
            try:
                decoded = json.loads(value)
            except (ValueError, RecursionError):
                return {"raw": value}
            return decoded if isinstance(decoded, dict) else {"raw": decoded}
        if value in (None, "", 0, False) or isinstance(value, str):
            return {}  # Paystack's own samples carry `"metadata": 0` and `"metadata": ""`
        return {"raw": value}

    @property
    def succeeded(self) -> bool:
        return self.status == "success"

    @property
    def loan_id(self) -> str | None:
        """The loan the payer named (`metadata.loan_id`): the first matching rule of DESIGN §4."""
        value = self.metadata.get("loan_id")
        return str(value) if value not in (None, "") else None

    @property
    def receiver_account_number(self) -> str | None:
        """The dedicated virtual account the money was paid into, wherever Paystack put it."""
        if self.authorization and self.authorization.receiver_bank_account_number:
            return self.authorization.receiver_bank_account_number
        if self.dedicated_account is not None:
            return self.dedicated_account.account_number
        value = self.metadata.get("receiver_account_number")
        return str(value) if value else None
