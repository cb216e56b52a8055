"""The simulated Paystack's collection side: customers, dedicated virtual accounts, charges and
stored transactions, and the signed webhooks it sends (offchain.rails.simulator.paystack)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any

from offchain.rails.paystack import webhooks
from offchain.rails.simulator import paystack_shapes as shapes
from offchain.rails.simulator.config import SimulatorConfig
from offchain.rails.simulator.delivery import Dispatcher
from offchain.rails.simulator.paystack_common import (
    BUSINESS_NAME,
    DVA_BANKS,
    INTEGRATION_ID,
    PaystackApiError,
    _code,
    _now,
    _positive_int,
    _required,
)


class PaystackCollections:
    """Mixed into PaystackSim, which owns the state these methods read and write."""

    config: SimulatorConfig
    dispatcher: Dispatcher
    transactions: dict[str, dict[str, Any]]
    customers: dict[str, dict[str, Any]]
    accounts: dict[str, dict[str, Any]]
    balances: dict[str, int]

    _id: Callable[[], int]  # PaystackSim's id counter

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
