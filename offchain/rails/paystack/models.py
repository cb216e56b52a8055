"""Paystack's resources as typed models: what the REST API answers and what webhooks carry.

Only the fields the backend relies on are declared; Paystack adds fields freely, so every model
keeps unknown ones (`extra="allow"`) rather than failing on them. Amounts are integers in the
currency's minor unit (kobo for NGN), exactly as Paystack sends them; a float amount is refused.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

MinorUnits = Annotated[int, Field(strict=True)]


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
    metadata: dict[str, Any] | None = None


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
    metadata: dict[str, Any] | None = None


class Bank(_Resource):
    name: str
    id: int | None = None
    slug: str | None = None


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
    channel: str | None = None
    gateway_response: str | None = None
    paid_at: str | None = None
    created_at: str | None = None
    # Paystack echoes what the integration sent: an object, a JSON string, "" or null
    metadata: dict[str, Any] = Field(default_factory=dict)
    authorization: Authorization | None = None
    customer: Customer | None = None
    dedicated_account: DedicatedAccount | None = None
    requested_amount: int | None = None
    fees: int | None = None

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata_object(cls, value: Any) -> Any:
        if value is None or value == "":
            return {}
        if isinstance(value, str):
            try:
                decoded = json.loads(value)
            except ValueError:
                return {"raw": value}
            return decoded if isinstance(decoded, dict) else {"raw": decoded}
        return value

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
