"""Simulated Paystack: the REST API the backend calls and the webhooks Paystack sends.

Served at the simulator's root, as at https://api.paystack.co:

    POST /transferrecipient            {type: nuban, name, account_number, bank_code, currency}
    POST /transfer                     {source: balance, amount, recipient, reference, reason, currency}
    POST /transfer/finalize_transfer   {transfer_code, otp}
    GET  /transfer/verify/{reference}  GET /transfer/{id_or_code}
    GET  /transaction/verify/{reference}
    POST /customer                     {email, first_name, last_name, phone}
    POST /dedicated_account            {customer, preferred_bank}
    POST /dedicated_account/assign     {email, first_name, last_name, phone, preferred_bank}
                                       (single step; dedicatedaccount.assign.success follows)
    GET  /balance

Every call needs `Authorization: Bearer <secret key>`; answers are `{"status", "message", "data"}`
and errors `{"status": false, "message", "type", "code"}`. Amounts are integer kobo.

Behaviour the backend relies on:
- A transfer reference is unique: the same reference with the same payout returns the transfer
  already made (never a second one); the same reference for a different payout is refused.
  Only a transfer that conclusively failed (or was reversed) may be retried under its reference.
- A recipient for an account number that exists is the existing recipient.
- A queued transfer settles by itself after `transfer_delay_s` and Paystack's webhook follows
  (`transfer.success` / `transfer.failed` / `transfer.reversed`), unless a scenario said the next
  transfers fail, reverse, stall, wait longer or need an OTP.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import re
import secrets
import string
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from offchain.rails.paystack import webhooks
from offchain.rails.simulator import paystack_shapes as shapes
from offchain.rails.simulator.config import SimulatorConfig
from offchain.rails.simulator.delivery import Dispatcher

Outcome = Literal["success", "failed", "reversed", "stall"]
# a transfer in one of these states may be initiated again with the same reference
RETRYABLE = ("failed", "reversed")
REFERENCE = re.compile(r"[a-z0-9_-]{1,100}")
INTEGRATION_ID = 463433
BUSINESS_NAME = "CaaS Simulator"
INTEGRATION = {"id": INTEGRATION_ID, "is_live": False, "business_name": BUSINESS_NAME}
BANKS = {
    "058": "Guaranty Trust Bank",
    "044": "Access Bank",
    "057": "Zenith Bank",
    "011": "First Bank of Nigeria",
    "033": "United Bank For Africa",
    "035": "Wema Bank",
    "999": "Test Bank",
}
DVA_BANKS = {
    "test-bank": {"name": "Test Bank", "id": 21, "slug": "test-bank"},
    "wema-bank": {"name": "Wema Bank", "id": 20, "slug": "wema-bank"},
    "titan-paystack": {"name": "Paystack-Titan", "id": 629, "slug": "titan-paystack"},
}
_ALPHABET = string.ascii_lowercase + string.digits


class PaystackApiError(Exception):
    def __init__(self, status: int, message: str, *, code: str = "invalid_params") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code

    def response(self) -> JSONResponse:
        kind = "api_error" if self.status >= 500 else "validation_error"
        return JSONResponse(
            {"status": False, "message": self.message, "type": kind, "code": self.code, "meta": {}},
            status_code=self.status,
        )


@dataclass
class TransferRule:
    """How the next transfer(s) go: `times` transfers, or only the one under `reference`."""

    outcome: Outcome = "success"
    otp: bool = False
    delay_s: float | None = None
    times: int = 1
    reference: str | None = None


def _code(prefix: str, length: int = 15) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def _now() -> str:
    """Paystack's timestamp format: ISO 8601, milliseconds, Z."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _positive_int(body: dict[str, Any], name: str) -> int:
    value = body.get(name)
    if isinstance(value, str) and value.isdigit():
        value = int(value)  # Paystack accepts amounts as numeric strings too
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise PaystackApiError(400, f"{name} must be a positive integer in the lowest currency unit")
    return value


def _required(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str | int) or isinstance(value, bool) or str(value).strip() == "":
        raise PaystackApiError(400, f"{name} is required")
    return str(value).strip()


class PaystackSim:
    def __init__(self, config: SimulatorConfig, dispatcher: Dispatcher) -> None:
        self.config = config
        self.dispatcher = dispatcher
        self.rules: list[TransferRule] = []
        self._ids = itertools.count(1)
        # called when a transfer settles in the background (the app persists its state then)
        self.on_change: Callable[[], None] = lambda: None
        self.reset()

    def reset(self) -> None:
        self.recipients: dict[str, dict[str, Any]] = {}
        self.transfers: dict[str, dict[str, Any]] = {}  # by reference, wire shape
        self.plans: dict[str, dict[str, Any]] = {}  # by reference: outcome, delay_s, recipient code
        self.transactions: dict[str, dict[str, Any]] = {}
        self.customers: dict[str, dict[str, Any]] = {}
        self.accounts: dict[str, dict[str, Any]] = {}  # dedicated accounts by account number
        self.balances: dict[str, int] = {"NGN": self.config.opening_balance}
        self.retried: dict[str, int] = {}  # retries of failed/reversed transfers, by reference
        self.rules = []

    def _id(self) -> int:
        return 100_000_000 + next(self._ids)

    # -- snapshot -----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "recipients": self.recipients,
            "transfers": self.transfers,
            "plans": self.plans,
            "transactions": self.transactions,
            "customers": self.customers,
            "accounts": self.accounts,
            "balances": self.balances,
            "retried": self.retried,
            "next_id": next(self._ids),
        }

    def restore(self, data: dict[str, Any]) -> None:
        for name in (
            "recipients",
            "transfers",
            "plans",
            "transactions",
            "customers",
            "accounts",
            "balances",
            "retried",
        ):
            setattr(self, name, dict(data.get(name, {})))
        self._ids = itertools.count(int(data.get("next_id", 1)))
        # transfers that were in flight when the simulator stopped settle now, as Paystack's would
        for reference, transfer in self.transfers.items():
            if transfer["status"] == "pending" and self.plans.get(reference, {}).get("outcome") != "stall":
                self._schedule(reference)

    # -- recipients ---------------------------------------------------------------------------

    def create_recipient(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        kind = _required(body, "type")
        if kind != "nuban":
            raise PaystackApiError(400, f"Recipient type {kind} is not supported by the simulator; use nuban")
        name = _required(body, "name")
        account_number = _required(body, "account_number")
        bank_code = _required(body, "bank_code")
        if not account_number.isdigit() or len(account_number) != 10:
            raise PaystackApiError(400, "Account number must be 10 digits")
        if bank_code not in BANKS:
            raise PaystackApiError(400, "Unknown bank code: " + bank_code)
        currency = str(body.get("currency") or "NGN")
        for recipient in self.recipients.values():
            details = recipient["details"]
            if details["account_number"] == account_number and details["bank_code"] == bank_code:
                return "Transfer recipient created successfully", recipient
        now = _now()
        recipient = {
            "active": True,
            "createdAt": now,
            "currency": currency,
            "description": body.get("description") or "",
            "domain": "test",
            "email": None,
            "id": self._id(),
            "integration": INTEGRATION_ID,
            "metadata": body.get("metadata"),
            "name": name,
            "recipient_code": _code("RCP_"),
            "type": "nuban",
            "updatedAt": now,
            "is_deleted": False,
            "isDeleted": False,
            "details": {
                "authorization_code": None,
                "account_number": account_number,
                "account_name": name.upper(),
                "bank_code": bank_code,
                "bank_name": BANKS[bank_code],
            },
        }
        self.recipients[recipient["recipient_code"]] = recipient
        return "Transfer recipient created successfully", recipient

    # -- transfers ----------------------------------------------------------------------------

    def initiate_transfer(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if (body.get("source") or "balance") != "balance":
            raise PaystackApiError(400, "Invalid source: only balance is supported")
        amount = _positive_int(body, "amount")
        recipient_code = _required(body, "recipient")
        recipient = self.recipients.get(recipient_code)
        if recipient is None:
            raise PaystackApiError(400, "Recipient specified is invalid", code="invalid_recipient")
        currency = str(body.get("currency") or recipient["currency"])
        reference = body.get("reference") or _code("", 20)
        if not isinstance(reference, str) or not REFERENCE.fullmatch(reference):
            raise PaystackApiError(
                400, "Invalid transfer reference: use lowercase letters, digits, '-' and '_' only"
            )
        existing = self.transfers.get(reference)
        if existing is not None:
            plan = self.plans[reference]
            if (existing["amount"], plan["recipient_code"], existing["currency"]) != (
                amount,
                recipient_code,
                currency,
            ):
                raise PaystackApiError(400, "Duplicate Transfer Reference", code="duplicate_reference")
            if existing["status"] not in RETRYABLE:
                if self.config.duplicate_reference == "reject":
                    raise PaystackApiError(400, "Duplicate Transfer Reference", code="duplicate_reference")
                return _status_message(existing["status"]), _initiate_view(existing)
            # A failed or reversed transfer may be retried under its own reference: the money is
            # back in the balance, so this is a new attempt, never a second payout.
            self.retried[reference] = self.retried.get(reference, 0) + 1
        if self.balances.get(currency, 0) < amount:
            raise PaystackApiError(
                400, "Your balance is not enough to fulfil this request", code="insufficient_balance"
            )
        rule = self._take_rule(reference)
        needs_otp = self.config.otp_required or rule.otp
        now = _now()
        transfer = {
            "integration": INTEGRATION_ID,
            "domain": "test",
            "amount": amount,
            "currency": currency,
            "source": "balance",
            "source_details": None,
            "reason": body.get("reason"),
            "recipient": recipient["id"],
            "status": "otp" if needs_otp else "pending",
            "transfer_code": _code("TRF_"),
            "reference": reference,
            "id": self._id(),
            "failures": None,
            "titan_code": None,
            "transferred_at": None,
            "createdAt": now,
            "updatedAt": now,
        }
        self.balances[currency] -= amount
        self.transfers[reference] = transfer
        self.plans[reference] = {
            "outcome": rule.outcome,
            "delay_s": rule.delay_s,
            "recipient_code": recipient_code,
        }
        if not needs_otp:
            self._schedule(reference)
        return _status_message(transfer["status"]), _initiate_view(transfer)

    def finalize_transfer(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        code = _required(body, "transfer_code")
        otp = _required(body, "otp")
        transfer = next((t for t in self.transfers.values() if t["transfer_code"] == code), None)
        if transfer is None:
            raise PaystackApiError(404, "Transfer not found", code="not_found")
        if transfer["status"] != "otp":
            raise PaystackApiError(400, "Transfer is not currently awaiting OTP", code="transfer_not_otp")
        if not hmac.compare_digest(otp.encode(), self.config.otp_code.encode()):
            raise PaystackApiError(400, "Invalid OTP", code="invalid_otp")
        transfer["status"] = "pending"
        transfer["updatedAt"] = _now()
        self._schedule(transfer["reference"])
        return "Transfer has been queued", self._full_view(transfer)

    def verify_transfer(self, reference: str) -> dict[str, Any]:
        transfer = self.transfers.get(reference)
        if transfer is None:
            raise PaystackApiError(404, "Transfer not found", code="not_found")
        return self._full_view(transfer)

    def fetch_transfer(self, id_or_code: str) -> dict[str, Any]:
        for transfer in self.transfers.values():
            if id_or_code in (transfer["transfer_code"], str(transfer["id"])):
                return self._full_view(transfer)
        raise PaystackApiError(404, "Transfer not found", code="not_found")

    def resolve_transfer(self, reference: str, outcome: Outcome) -> dict[str, Any]:
        """Control: settle a pending (e.g. stalled) transfer now, with the given outcome."""
        transfer = self.transfers.get(reference)
        if transfer is None:
            raise PaystackApiError(404, "Transfer not found", code="not_found")
        if transfer["status"] not in ("pending", "otp"):
            raise PaystackApiError(409, f"Transfer is already {transfer['status']}")
        self.plans[reference]["outcome"] = outcome
        self.plans[reference]["delay_s"] = 0.0
        transfer["status"] = "pending"
        self._schedule(reference)
        return self._full_view(transfer)

    def _take_rule(self, reference: str) -> TransferRule:
        for rule in self.rules:
            if rule.times > 0 and rule.reference in (None, reference):
                rule.times -= 1
                self.rules = [r for r in self.rules if r.times > 0]
                return rule
        return TransferRule()

    def _schedule(self, reference: str) -> None:
        plan = self.plans[reference]
        if plan["outcome"] == "stall":
            return
        delay = plan["delay_s"] if plan["delay_s"] is not None else self.config.transfer_delay_s
        self.dispatcher.spawn(self._settle(reference, delay))

    async def _settle(self, reference: str, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        transfer = self.transfers.get(reference)
        if transfer is None or transfer["status"] != "pending":
            return
        outcome = self.plans[reference]["outcome"]
        if outcome == "failed":
            self._finish(transfer, "failed", failures={"reason": "Destination bank is not available"})
            self._emit(webhooks.TRANSFER_FAILED, transfer)
            return
        self._finish(transfer, "success")
        self._emit(webhooks.TRANSFER_SUCCESS, transfer)
        if outcome == "reversed":
            await asyncio.sleep(delay_s or self.config.transfer_delay_s)
            self._finish(transfer, "reversed")
            self._emit(webhooks.TRANSFER_REVERSED, transfer)

    def _finish(self, transfer: dict[str, Any], status: str, *, failures: Any = None) -> None:
        now = _now()
        transfer["status"] = status
        transfer["updatedAt"] = now
        if status == "success":
            transfer["transferred_at"] = now
        else:
            transfer["failures"] = failures
            # failed and reversed transfers return the money to the balance
            self.balances[transfer["currency"]] = (
                self.balances.get(transfer["currency"], 0) + transfer["amount"]
            )
        self.on_change()

    def _full_view(self, transfer: dict[str, Any]) -> dict[str, Any]:
        plan = self.plans[transfer["reference"]]
        view = dict(transfer)
        view["recipient"] = self.recipients[plan["recipient_code"]]
        return view

    def _emit(self, event: str, transfer: dict[str, Any]) -> None:
        full = self._full_view(transfer)
        data = {k: v for k, v in full.items() if k not in ("createdAt", "updatedAt")}
        data["integration"] = INTEGRATION
        data["session"] = {"provider": None, "id": None}
        data["created_at"] = transfer["createdAt"]
        data["updated_at"] = transfer["updatedAt"]
        data["recipient"] = {
            **{
                k: v for k, v in full["recipient"].items() if k not in ("createdAt", "updatedAt", "isDeleted")
            },
            "created_at": full["recipient"]["createdAt"],
            "updated_at": full["recipient"]["updatedAt"],
        }
        self.send_webhook(event, data, reference=transfer["reference"])

    # -- customers and dedicated accounts -----------------------------------------------------

    def create_customer(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        email = _required(body, "email").lower()
        if "@" not in email:
            raise PaystackApiError(400, "Invalid Email Address Passed")
        existing = next((c for c in self.customers.values() if c["email"] == email), None)
        if existing is not None:
            for field in ("first_name", "last_name", "phone"):
                if body.get(field):
                    existing[field] = body[field]
            return "Customer created", existing
        now = _now()
        customer: dict[str, Any] = {
            "email": email,
            "integration": INTEGRATION_ID,
            "domain": "test",
            "customer_code": _code("CUS_"),
            "id": self._id(),
            "identified": False,
            "identifications": None,
            "first_name": body.get("first_name"),
            "last_name": body.get("last_name"),
            "phone": body.get("phone"),
            "metadata": body.get("metadata"),
            "risk_action": "default",
            "createdAt": now,
            "updatedAt": now,
        }
        self.customers[customer["customer_code"]] = customer
        return "Customer created", customer

    def create_dedicated_account(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        ident = _required(body, "customer")
        customer = self.customers.get(ident) or next(
            (c for c in self.customers.values() if str(c["id"]) == ident), None
        )
        if customer is None:
            raise PaystackApiError(404, "Customer not found", code="not_found")
        slug = str(body.get("preferred_bank") or "test-bank")
        bank = DVA_BANKS.get(slug)
        if bank is None:
            raise PaystackApiError(
                400, f"Preferred bank {slug} is not available; one of {', '.join(DVA_BANKS)}"
            )
        for account in self.accounts.values():
            if (
                account["customer"]["customer_code"] == customer["customer_code"]
                and account["bank"]["slug"] == slug
            ):
                return "NUBAN successfully created", account
        now = _now()
        number = f"9{self._id() % 10**9:09d}"  # ids are unique, so are the NUBANs
        owner = (
            " ".join(filter(None, (customer.get("last_name"), customer.get("first_name"))))
            or customer["email"]
        )
        account = {
            "bank": bank,
            "account_name": f"{BUSINESS_NAME.upper()}/{owner}",
            "account_number": number,
            "assigned": True,
            "currency": "NGN",
            "metadata": None,
            "active": True,
            "id": self._id(),
            "created_at": now,
            "updated_at": now,
            "assignment": {
                "integration": INTEGRATION_ID,
                "assignee_id": customer["id"],
                "assignee_type": "Customer",
                "expired": False,
                "account_type": "PAY-WITH-TRANSFER-RECURRING",
                "assigned_at": now,
            },
            "customer": {
                k: customer[k]
                for k in ("id", "first_name", "last_name", "email", "customer_code", "phone", "risk_action")
            },
        }
        self.accounts[number] = account
        return "NUBAN successfully created", account

    # -- charges ------------------------------------------------------------------------------

    def assign_dedicated_account(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Single-step assignment: customer and account made now, the outcome as a webhook."""
        _, customer = self.create_customer(body)
        _, account = self.create_dedicated_account(
            {"customer": customer["customer_code"], "preferred_bank": body.get("preferred_bank")}
        )
        self.send_webhook(
            "dedicatedaccount.assign.success",
            shapes.assignment_event(customer, account),
            reference=account["account_number"],
        )
        return "Assign dedicated account in progress", {}

    def store_transaction(self, body: dict[str, Any]) -> dict[str, Any]:
        """Control: a transaction in Paystack's verify shape (e.g. a documented sample), kept as
        given and answered by verify; `deliver: true` also sends its `charge.success`."""
        try:
            transaction = shapes.verbatim_transaction(body)
        except shapes.ShapeError as error:
            raise PaystackApiError(400, str(error)) from None
        reference = transaction["reference"]
        if reference in self.transactions:
            raise PaystackApiError(409, "Duplicate Transaction Reference", code="duplicate_reference")
        self.transactions[reference] = transaction
        sent = []
        if body.get("deliver"):
            sent = self.send_webhook(
                webhooks.CHARGE_SUCCESS, self._charge_event_data(transaction), reference=reference
            )
        return {"reference": reference, "transaction": transaction, "deliveries": [d.id for d in sent]}

    def record_charge(self, body: dict[str, Any]) -> dict[str, Any]:
        """Control: a payment Paystack received; records it and sends `charge.success`.

        `bearer`: who bears Paystack's fee (merchant, the default, or customer: then `amount` is
        the repayment asked for and the payer is charged it plus the fee, as Paystack shows);
        `metadata_format`: how metadata is echoed (object, string, empty, zero, null, absent).
        """
        requested = _positive_int(body, "amount")
        try:
            amount, fees = shapes.charged(requested, str(body.get("bearer") or "merchant"))
        except shapes.ShapeError as error:
            raise PaystackApiError(400, str(error)) from None
        currency = str(body.get("currency") or "NGN")
        reference = str(body.get("reference") or f"T{secrets.randbelow(10**15):015d}")
        if reference in self.transactions:
            raise PaystackApiError(409, "Duplicate Transaction Reference", code="duplicate_reference")
        metadata: dict[str, Any] = dict(body.get("metadata") or {})
        if body.get("loan_id"):
            metadata["loan_id"] = str(body["loan_id"])
        account_number = body.get("account_number")
        now = _now()
        transaction: dict[str, Any] = {
            "id": self._id(),
            "domain": "test",
            "status": "success",
            "reference": reference,
            "receipt_number": None,
            "amount": amount,
            "message": None,
            "gateway_response": "Approved" if account_number else "Successful",
            "paid_at": now,
            "created_at": now,
            "channel": "dedicated_nuban" if account_number else "card",
            "currency": currency,
            "ip_address": None,
            "metadata": metadata or "",
            "log": None,
            "fees": fees,
            "fees_split": None,
            "plan": {},
            "split": {},
            "subaccount": {},
            "order_id": None,
            "requested_amount": requested,
            "pos_transaction_data": None,
            "source": None,
            "fees_breakdown": None,
            "paidAt": now,
            "createdAt": now,
        }
        account = self.accounts.get(str(account_number)) if account_number else None
        if account_number:
            bank_name = account["bank"]["name"] if account else "Test Bank"
            payer = body.get("payer_name") or "JOHN DOE"
            transaction["metadata"] = {
                **metadata,
                "receiver_account_number": str(account_number),
                "receiver_bank": bank_name,
                "receiver_account_type": None,
                "custom_fields": [
                    {
                        "display_name": "Receiver Account",
                        "variable_name": "receiver_account_number",
                        "value": str(account_number),
                    },
                    {"display_name": "Receiver Bank", "variable_name": "receiver_bank", "value": bank_name},
                ],
            }
            transaction["authorization"] = {
                "authorization_code": _code("AUTH_", 10),
                "bin": "008XXX",
                "last4": "X553",
                "exp_month": "12",
                "exp_year": "9999",
                "channel": "dedicated_nuban",
                "card_type": "transfer",
                "bank": "Access Bank",
                "country_code": "NG",
                "brand": "Managed Account",
                "reusable": False,
                "signature": None,
                "account_name": None,
                "sender_country": "NG",
                "sender_bank": "Access Bank",
                "sender_bank_account_number": "XXXXXX" + f"{secrets.randbelow(10**4):04d}",
                "sender_name": payer,
                "narration": body.get("narration") or f"TRF FRM {payer} TO {account_number}",
                "receiver_bank_account_number": str(account_number),
                "receiver_bank": bank_name,
            }
            if account is not None:
                transaction["customer"] = dict(account["customer"], metadata=None)
                transaction["dedicated_account"] = {
                    k: account[k] for k in ("id", "account_name", "account_number", "bank", "currency")
                }
        else:
            transaction["authorization"] = {
                "authorization_code": _code("AUTH_", 10),
                "bin": "408408",
                "last4": "4081",
                "exp_month": "12",
                "exp_year": "2030",
                "channel": "card",
                "card_type": "visa ",
                "bank": "TEST BANK",
                "country_code": "NG",
                "brand": "visa",
                "reusable": True,
                "signature": _code("SIG_", 20),
                "account_name": None,
            }
        if "customer" not in transaction:
            email = str(body.get("email") or "customer@example.com")
            _, customer = self.create_customer({"email": email})
            transaction["customer"] = {
                k: customer.get(k)
                for k in (
                    "id",
                    "first_name",
                    "last_name",
                    "email",
                    "customer_code",
                    "phone",
                    "metadata",
                    "risk_action",
                )
            }
        form = str(body.get("metadata_format") or "object")
        try:
            shapes.shape_metadata(transaction, transaction.get("metadata") or {}, form)
        except shapes.ShapeError as error:
            raise PaystackApiError(400, str(error)) from None
        self.transactions[reference] = transaction
        delivery = self.send_webhook(
            webhooks.CHARGE_SUCCESS, self._charge_event_data(transaction), reference=reference
        )
        return {"reference": reference, "transaction": transaction, "deliveries": [d.id for d in delivery]}

    def verify_transaction(self, reference: str) -> dict[str, Any]:
        transaction = self.transactions.get(reference)
        if transaction is None:
            raise PaystackApiError(400, "Transaction reference not found", code="transaction_not_found")
        return transaction

    @staticmethod
    def _charge_event_data(transaction: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in transaction.items() if k not in ("paidAt", "createdAt", "receipt_number")}

    # -- webhooks -----------------------------------------------------------------------------

    def send_webhook(self, event: str, data: dict[str, Any], *, reference: str | None) -> list[Any]:
        body = json.dumps({"event": event, "data": data}, separators=(",", ":")).encode()
        secret = self.config.paystack_secret_key

        def signer(raw: bytes) -> dict[str, str]:
            return {
                webhooks.SIGNATURE_HEADER: webhooks.sign(raw, secret),
                "user-agent": "Paystack (simulator)",
            }

        return self.dispatcher.dispatch(
            "paystack", event, self.config.webhook_url(), body, signer, reference=reference
        )


def _status_message(status: str) -> str:
    return "Transfer requires OTP to continue" if status == "otp" else "Transfer has been queued"


def _initiate_view(transfer: dict[str, Any]) -> dict[str, Any]:
    keep = (
        "integration",
        "domain",
        "amount",
        "currency",
        "source",
        "reason",
        "recipient",
        "status",
        "transfer_code",
        "reference",
        "id",
        "createdAt",
        "updatedAt",
    )
    return {k: transfer[k] for k in keep}


def paystack_router(sim: PaystackSim) -> APIRouter:
    router = APIRouter(tags=["paystack"])

    def authorize(request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if not header:
            raise PaystackApiError(401, "Authorization key not specified", code="unauthorized")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            key.strip().encode(), sim.config.paystack_secret_key.encode()
        ):
            raise PaystackApiError(401, "Invalid key", code="unauthorized")

    async def body_of(request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise PaystackApiError(400, "Invalid JSON body") from None
        if not isinstance(body, dict):
            raise PaystackApiError(400, "Request body must be a JSON object")
        return body

    def ok(message: str, data: Any, status: int = 200) -> JSONResponse:
        return JSONResponse({"status": True, "message": message, "data": data}, status_code=status)

    @router.post("/transferrecipient")
    async def create_recipient(request: Request) -> JSONResponse:
        authorize(request)
        message, data = sim.create_recipient(await body_of(request))
        return ok(message, data, 201)

    @router.post("/transfer")
    async def initiate_transfer(request: Request) -> JSONResponse:
        authorize(request)
        message, data = sim.initiate_transfer(await body_of(request))
        return ok(message, data)

    @router.post("/transfer/finalize_transfer")
    async def finalize_transfer(request: Request) -> JSONResponse:
        authorize(request)
        message, data = sim.finalize_transfer(await body_of(request))
        return ok(message, data)

    @router.get("/transfer/verify/{reference}")
    async def verify_transfer(reference: str, request: Request) -> JSONResponse:
        authorize(request)
        return ok("Transfer retrieved", sim.verify_transfer(reference))

    @router.get("/transfer/{id_or_code}")
    async def fetch_transfer(id_or_code: str, request: Request) -> JSONResponse:
        authorize(request)
        return ok("Transfer retrieved", sim.fetch_transfer(id_or_code))

    @router.get("/transaction/verify/{reference}")
    async def verify_transaction(reference: str, request: Request) -> JSONResponse:
        authorize(request)
        return ok("Verification successful", sim.verify_transaction(reference))

    @router.post("/customer")
    async def create_customer(request: Request) -> JSONResponse:
        authorize(request)
        message, data = sim.create_customer(await body_of(request))
        return ok(message, data)

    @router.post("/dedicated_account")
    async def create_dedicated_account(request: Request) -> JSONResponse:
        authorize(request)
        message, data = sim.create_dedicated_account(await body_of(request))
        return ok(message, data)

    @router.post("/dedicated_account/assign")
    async def assign_dedicated_account(request: Request) -> JSONResponse:
        authorize(request)
        message, _ = sim.assign_dedicated_account(await body_of(request))
        return JSONResponse({"status": True, "message": message})

    @router.get("/balance")
    async def balance(request: Request) -> JSONResponse:
        authorize(request)
        data = [{"currency": c, "balance": b} for c, b in sim.balances.items()]
        return ok("Balances retrieved", data)

    return router


def transfer_rule(body: dict[str, Any]) -> TransferRule:
    outcome = body.get("outcome", "success")
    if outcome not in ("success", "failed", "reversed", "stall"):
        raise PaystackApiError(400, "transfer outcome must be success, failed, reversed or stall")
    times = body.get("times", 1)
    delay = body.get("delay_s")
    if not isinstance(times, int) or times < 1:
        raise PaystackApiError(400, "times must be a positive integer")
    if delay is not None and (not isinstance(delay, int | float) or delay < 0):
        raise PaystackApiError(400, "delay_s must be a non-negative number")
    return TransferRule(
        outcome=outcome,
        otp=bool(body.get("otp", False)),
        delay_s=float(delay) if delay is not None else None,
        times=times,
        reference=body.get("reference"),
    )


def rule_view(rule: TransferRule) -> dict[str, Any]:
    return asdict(rule)
