"""Simulated SME platform: auth (RS256 tokens + JWKS), KYC, AML screen, events, notifications.

    GET  /sme/auth/.well-known/jwks.json     the signing keys (current and recently retired)
    POST /sme/auth/token                     {partner_id, sub?, creditPermissions?, creditLimit?,
                                              riskRating?, expires_in?} -> {access_token, ...}
    GET  /sme/kyc/{user_id}                  KYC record (id conventions: profiles.py)
    GET  /sme/kyc/{user_id}/bank-statement   12 months of transactions, signed kobo
    GET  /sme/aml/{user_id}                  sanctions screen: clear | hit
    POST /sme/notifications                  the backend tells the platform credit is available

Events the platform sends to the backend (`x-sme-signature`, see offchain.rails.sme.events) are
triggered through the control endpoints in app.py.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import APIRouter, HTTPException, Request
from jwt.algorithms import RSAAlgorithm

from offchain.platform.auth import ALL_PERMISSIONS
from offchain.rails.simulator import profiles
from offchain.rails.simulator.config import SimulatorConfig
from offchain.rails.simulator.delivery import Delivery, Dispatcher
from offchain.rails.sme import events

KEYS_KEPT = 3  # the current key and the two before it stay published, so older tokens still verify


@dataclass
class SigningKey:
    kid: str
    private_key: rsa.RSAPrivateKey
    created_at: float

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(
            kid=f"sme-{secrets.token_hex(6)}",
            private_key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
            created_at=time.time(),
        )

    def jwk(self) -> dict[str, Any]:
        public = RSAAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {**public, "kid": self.kid, "use": "sig", "alg": "RS256"}

    def to_json(self) -> dict[str, Any]:
        pem = self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return {"kid": self.kid, "pem": pem.decode(), "created_at": self.created_at}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SigningKey:
        key = serialization.load_pem_private_key(data["pem"].encode(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("state file holds a non-RSA signing key")
        return cls(kid=data["kid"], private_key=key, created_at=float(data["created_at"]))


class SmeSim:
    def __init__(self, config: SimulatorConfig, dispatcher: Dispatcher) -> None:
        self.config = config
        self.dispatcher = dispatcher
        self.keys: list[SigningKey] = [SigningKey.generate()]
        self.notifications: list[dict[str, Any]] = []
        self.payments: dict[str, dict[str, Any]] = {}  # by reference, as GET /sme/payments/{ref} shows
        self.wallet_transfers: dict[str, dict[str, Any]] = {}  # payouts into SME wallets, by reference

    @property
    def current_key(self) -> SigningKey:
        return self.keys[-1]

    def snapshot(self) -> dict[str, Any]:
        return {
            "keys": [k.to_json() for k in self.keys],
            "notifications": self.notifications,
            "payments": self.payments,
            "wallet_transfers": self.wallet_transfers,
        }

    def restore(self, data: dict[str, Any]) -> None:
        if data.get("keys"):
            self.keys = [SigningKey.from_json(k) for k in data["keys"]]
        self.notifications = list(data.get("notifications", []))
        self.payments = dict(data.get("payments", {}))
        self.wallet_transfers = dict(data.get("wallet_transfers", {}))

    def rotate(self, *, retire_previous: bool = False) -> SigningKey:
        new = SigningKey.generate()
        self.keys = [new] if retire_previous else [*self.keys, new][-KEYS_KEPT:]
        return new

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.jwk() for k in reversed(self.keys)]}

    def issue_token(self, body: dict[str, Any]) -> dict[str, Any]:
        partner_id = body.get("partner_id")
        if not isinstance(partner_id, str) or not partner_id:
            raise HTTPException(400, "partner_id is required")
        permissions = body.get("creditPermissions", list(ALL_PERMISSIONS))
        if not isinstance(permissions, list) or not all(isinstance(p, str) for p in permissions):
            raise HTTPException(400, "creditPermissions must be a list of strings")
        expires_in = body.get("expires_in", 3600)
        if not isinstance(expires_in, int) or not 1 <= expires_in <= 30 * 86_400:
            raise HTTPException(400, "expires_in must be 1..2592000 seconds")
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.config.jwt_issuer,
            "sub": str(body.get("sub") or f"partner-user-{partner_id}"),
            "partner_id": partner_id,
            "creditPermissions": permissions,
            "iat": now,
            "exp": now + expires_in,
        }
        for optional in ("creditLimit", "riskRating", "aud"):
            if body.get(optional) is not None:
                claims[optional] = body[optional]
        if "creditLimit" in claims and (
            isinstance(claims["creditLimit"], bool) or not isinstance(claims["creditLimit"], int)
        ):
            raise HTTPException(400, "creditLimit must be an integer of minor units")
        key = self.current_key
        token = jwt.encode(claims, key.private_key, algorithm="RS256", headers={"kid": key.kid})
        return {"access_token": token, "token_type": "Bearer", "expires_in": expires_in, "kid": key.kid}

    # -- events to the backend ------------------------------------------------------------------

    def send_event(self, event_type: str, data: dict[str, Any], *, reference: str | None) -> list[Delivery]:
        event_id = f"evt_{secrets.token_hex(12)}"
        created_at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        body = events.encode_event(event_type, data, event_id=event_id, created_at=created_at)
        secret = self.config.sme_events_secret

        def signer(raw: bytes) -> dict[str, str]:
            # signed per attempt: a retry minutes later must still be inside the tolerance window
            return {
                events.SIGNATURE_HEADER: events.sign(raw, secret),
                "user-agent": "SME-Platform (simulator)",
            }

        return self.dispatcher.dispatch(
            "sme", event_type, self.config.events_url(), body, signer, reference=reference
        )

    def kyc_verified(self, body: dict[str, Any]) -> list[Delivery]:
        user_id = body.get("user_id")
        if not isinstance(user_id, str) or not user_id:
            raise HTTPException(400, "user_id is required")
        kind = profiles.kind_of(user_id)
        if kind in ("pending", "rejected"):
            raise HTTPException(
                409, f"{user_id} has KYC {kind}: the platform sends sme.kyc.verified only when verified"
            )
        record = profiles.kyc_record(user_id, today=date.today())
        data: dict[str, Any] = {
            "user_id": user_id,
            "kyc_status": "verified",
            "verification_date": record["verificationDate"],
        }
        if body.get("partner_id"):
            data["partner_id"] = str(body["partner_id"])
        return self.send_event(events.KYC_VERIFIED, data, reference=user_id)

    def payment(self, body: dict[str, Any]) -> list[Delivery]:
        amount = body.get("amount")
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            raise HTTPException(400, "amount must be a positive integer of minor units")
        currency = body.get("currency", "NGN")
        if not isinstance(currency, str) or len(currency) != 3 or not currency.isupper():
            raise HTTPException(400, "currency must be an ISO 4217 code such as NGN")
        method = body.get("method", "bank_transfer")
        if method not in ("bank_transfer", "wallet"):
            raise HTTPException(400, "method must be bank_transfer or wallet")
        data: dict[str, Any] = {
            "payment_id": f"pay_{secrets.token_hex(10)}",
            "reference": str(body.get("reference") or f"smepay_{secrets.token_hex(10)}"),
            "amount": amount,
            "currency": currency,
            "method": method,
            "paid_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }
        for optional in ("loan_id", "user_id", "account_number"):
            if body.get(optional):
                data[optional] = str(body[optional])
        if data["reference"] in self.payments:
            raise HTTPException(409, "a payment with this reference exists")
        self.payments[data["reference"]] = {**data, "status": "successful"}
        return self.send_event(events.PAYMENT_RECEIVED, data, reference=data["reference"])

    def wallet_transfer(self, body: dict[str, Any]) -> dict[str, Any]:
        """A payout into an SME wallet: settles at once. Wallet numbers starting 000 are closed.

        The reference is the idempotency key: the same payout again returns the transfer made;
        another payout under it is refused; a failed one may be retried under it.
        """
        reference, wallet_id = body.get("reference"), body.get("wallet_id")
        amount, currency = body.get("amount"), body.get("currency", "NGN")
        if not isinstance(reference, str) or not reference or not isinstance(wallet_id, str) or not wallet_id:
            raise HTTPException(400, "reference and wallet_id are required")
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            raise HTTPException(400, "amount must be a positive integer of minor units")
        existing = self.wallet_transfers.get(reference)
        if existing is not None:
            if (existing["wallet_id"], existing["amount"], existing["currency"]) != (
                wallet_id,
                amount,
                currency,
            ):
                raise HTTPException(409, "reference already names another transfer")
            if existing["status"] != "failed":
                return existing
        failed = wallet_id.startswith("000")
        transfer = {
            "reference": reference,
            "transfer_id": f"wtr_{secrets.token_hex(8)}",
            "wallet_id": wallet_id,
            "amount": amount,
            "currency": currency,
            "status": "failed" if failed else "successful",
            "failure_reason": "wallet is closed" if failed else None,
            "completed_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }
        self.wallet_transfers[reference] = transfer
        return transfer

    def notify(self, raw: bytes, headers: dict[str, str]) -> dict[str, Any]:
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            raise HTTPException(400, "body must be JSON") from None
        signature = headers.get(events.SIGNATURE_HEADER)
        verified: bool | None = None
        if signature is not None:
            try:
                events.verify(raw, signature, self.config.sme_events_secret)
                verified = True
            except events.SmeEventRejected:
                verified = False
        entry = {
            "id": f"ntf_{len(self.notifications) + 1:06d}",
            "received_at": datetime.now(UTC).isoformat(),
            "payload": payload,
            "signature_valid": verified,
        }
        self.notifications.append(entry)
        return entry


def sme_router(sim: SmeSim) -> APIRouter:
    router = APIRouter(prefix="/sme", tags=["sme"])

    @router.get("/auth/.well-known/jwks.json")
    async def jwks() -> dict[str, Any]:
        return sim.jwks()

    @router.post("/auth/token")
    async def token(request: Request) -> dict[str, Any]:
        body = await _json_object(request)
        return sim.issue_token(body)

    @router.get("/kyc/{user_id}")
    async def kyc(user_id: str) -> dict[str, Any]:
        return profiles.kyc_record(user_id, today=date.today())

    @router.get("/kyc/{user_id}/bank-statement")
    async def bank_statement(user_id: str) -> dict[str, Any]:
        return profiles.bank_statement(user_id, end=date.today())

    @router.get("/aml/{user_id}")
    async def aml(user_id: str) -> dict[str, Any]:
        return profiles.aml_screen(user_id, screened_at=datetime.now(UTC))

    @router.get("/payments/{reference}")
    async def payment(reference: str) -> dict[str, Any]:
        """The SME payments service's record of a payment: what the backend verifies events with."""
        record = sim.payments.get(reference)
        if record is None:
            raise HTTPException(404, "payment not found")
        return record

    @router.get("/users/{user_id}/contact")
    async def contact(user_id: str) -> dict[str, Any]:
        """The user's contact details, made up from the id (same id, same details)."""
        if user_id.startswith("unknown-"):
            raise HTTPException(404, "user not found")
        digits = int.from_bytes(hashlib.sha256(user_id.encode()).digest()[:8], "big") % 10**9
        slug = "".join(c if c.isalnum() else "." for c in user_id.lower()).strip(".") or "user"
        return {"user_id": user_id, "phone": f"+2348{digits:09d}", "email": f"{slug}@sme-sim.example"}

    @router.post("/wallet/transfers")
    async def wallet_transfer(request: Request) -> dict[str, Any]:
        return sim.wallet_transfer(await _json_object(request))

    @router.get("/wallet/transfers/{reference}")
    async def wallet_transfer_status(reference: str) -> dict[str, Any]:
        transfer = sim.wallet_transfers.get(reference)
        if transfer is None:
            raise HTTPException(404, "transfer not found")
        return transfer

    @router.post("/notifications", status_code=202)
    async def notifications(request: Request) -> dict[str, Any]:
        return sim.notify(await request.body(), dict(request.headers))

    return router


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise HTTPException(400, "body must be a JSON object") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "body must be a JSON object")
    return body
