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

The parts: paystack_common (constants, errors, rules), this module (the state, recipients and
transfers), paystack_collections (customers, virtual accounts, charges, webhooks out),
paystack_routes (the REST routes).
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
from collections.abc import Callable
from typing import Any

from offchain.rails.paystack import webhooks
from offchain.rails.simulator.config import SimulatorConfig
from offchain.rails.simulator.delivery import Dispatcher
from offchain.rails.simulator.paystack_collections import PaystackCollections
from offchain.rails.simulator.paystack_common import (
    BANKS,
    INTEGRATION,
    INTEGRATION_ID,
    REFERENCE,
    RETRYABLE,
    Outcome,
    PaystackApiError,
    TransferRule,
    _code,
    _now,
    _positive_int,
    _required,
)


class PaystackSim(PaystackCollections):
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
