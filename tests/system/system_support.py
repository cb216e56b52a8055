"""Driving a running stack from the outside: the partner API, the simulator, the chain.

Everything here goes over HTTP or JSON-RPC to what `caas up` serves; nothing is imported into
the test's process but clients.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import httpx
from eth_account import Account
from eventually import eventually
from web3 import Web3

from offchain.chain.contracts import Deployment, sign_approval
from offchain.demo import PAYOUT_BANK_CODE, valid_nuban
from offchain.domain.loan_book import LoanState

T = TypeVar("T")
LAGOS = ZoneInfo("Africa/Lagos")  # the lender's business timezone (COLLECTIONS__TIMEZONE default)
DAY = 86_400


@dataclass
class Stack:
    cwd: Path
    env: dict[str, str]
    dev_env: dict[str, str]
    log: Path
    api: httpx.Client
    sim: httpx.Client
    w3: Web3
    deployment: Deployment

    @classmethod
    def connect(cls, *, cwd: Path, env: dict[str, str], dev_env: dict[str, str], log: Path) -> Stack:
        api = httpx.Client(
            base_url=dev_env["GATEWAY_URL"],
            headers={"Authorization": f"Bearer {dev_env['DEMO_PARTNER_TOKEN']}"},
            timeout=30,
        )
        sim = httpx.Client(base_url=dev_env["SIMULATOR_URL"], timeout=30)
        w3 = Web3(Web3.HTTPProvider(dev_env["CHAIN_RPC_URL"], request_kwargs={"timeout": 30}))
        return cls(cwd, env, dev_env, log, api, sim, w3, Deployment.load(dev_env["DEPLOYMENT_FILE"]))

    def close(self) -> None:
        self.api.close()
        self.sim.close()

    @property
    def signer_keys(self) -> list[str]:
        return self.dev_env["SIGNER_KEYS"].split(",")

    @property
    def book(self) -> Any:
        return self.deployment.loan_book(self.w3)

    @property
    def committee(self) -> Any:
        return self.deployment.committee(self.w3)

    # -- the partner API -------------------------------------------------------------------------

    def get(self, path: str, **kw: Any) -> Any:
        response = self.api.get(path, **kw)
        assert response.status_code == 200, (path, response.status_code, response.text)
        return response.json()

    def post(self, path: str, body: Any, *, expect: int = 200, **kw: Any) -> Any:
        response = self.api.post(path, json=body, **kw)
        assert response.status_code == expect, (path, response.status_code, response.text)
        return response.json()

    @property
    def operator(self) -> dict[str, str]:
        """The headers of the stack's dev operator (platform-wide actions: close of business, ...)."""
        return {"Authorization": f"Bearer {self.dev_env['DEMO_OPERATOR_TOKEN']}"}

    def loan(self, loan_id: str) -> dict[str, Any]:
        return self.get(f"/v1/loans/{loan_id}")

    def loan_in(self, loan_id: str, state: str, within_s: float = 90.0) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            loan = self.loan(loan_id)
            return loan if loan["chain_state"] == state else None

        return eventually(check, within_s=within_s, what=f"loan {loan_id} {state} in the backend")

    def events(self, loan_id: str, name: str) -> list[dict[str, Any]]:
        return [tx for tx in self.loan(loan_id)["transactions"] if tx["event"] == name]

    def pending_loan(
        self,
        external_id: str,
        *,
        borrower: str = "acme-trading-ltd",
        amount: int = 300_000_00,
        tenor_months: int = 3,
        account_number: str | None = None,
    ) -> str:
        """Application -> offer -> acceptance: the loan PENDING on chain, no approvals yet."""
        created = self.post(
            "/v1/applications",
            {
                "external_id": external_id,
                "borrower": {"sme_user_id": borrower},
                "amount": {"value": amount, "currency": "NGN"},
                "tenor_months": tenor_months,
                "purpose": "inventory",
            },
            expect=201,
            headers={"Idempotency-Key": f"{external_id}-application"},
        )

        def decided() -> dict[str, Any] | None:
            body = self.get(f"/v1/applications/{created['id']}")
            return body if body["status"] not in ("submitted", "underwriting") else None

        application = eventually(decided, what="the decision")
        assert application["status"] == "offered", application
        accepted = self.post(
            f"/v1/offers/{application['offers'][0]['id']}/accept",
            {
                "payout": {
                    "method": "bank_transfer",
                    "account_number": account_number or valid_nuban(),
                    "bank_code": PAYOUT_BANK_CODE,
                }
            },
            expect=201,
            headers={"Idempotency-Key": f"{external_id}-accept"},
        )
        loan_id = str(accepted["loan_id"])
        self.loan_in(loan_id, "PENDING")
        return loan_id

    def sign_off(self, loan_id: str) -> None:
        """As many committee signers as required sign the loan's approval request."""
        request = self.get(f"/v1/loans/{loan_id}/approval-request")
        for key in self.signer_keys[: request["required"]]:
            signer, signature = sign_approval(request["typed_data"], key)
            self.post(
                f"/v1/loans/{loan_id}/approvals", {"signer": signer, "signature": "0x" + signature.hex()}
            )

    def approved_loan(self, external_id: str, *, amount: int = 300_000_00, tenor_months: int = 3) -> str:
        """Application -> offer -> acceptance -> two signer signatures -> APPROVED on chain."""
        loan_id = self.pending_loan(external_id, amount=amount, tenor_months=tenor_months)
        self.sign_off(loan_id)
        self.loan_in(loan_id, "APPROVED")
        return loan_id

    # -- the chain -------------------------------------------------------------------------------

    def chain_state(self, chain_loan_id: str) -> LoanState:
        return LoanState(self.book.functions.loan_state(bytes.fromhex(chain_loan_id[2:])).call())

    def head_timestamp(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def warp_to(self, unix: int) -> None:
        """Anvil's clock to `unix` (forward only), with a block mined at that time."""
        delta = unix - self.head_timestamp()
        assert delta > 0, f"cannot move the chain's clock back ({delta}s)"
        self.w3.provider.make_request("evm_increaseTime", [delta])
        self.w3.provider.make_request("evm_mine", [])

    def transact(self, key: str, to: str, data: str) -> dict[str, Any]:
        """A signer's own transaction, signed locally with its key (as a wallet would)."""
        account = Account.from_key(key)
        tx = {
            "from": account.address,
            "to": Web3.to_checksum_address(to),
            "data": data,
            "nonce": self.w3.eth.get_transaction_count(account.address, "pending"),
            "chainId": self.w3.eth.chain_id,
            "gas": 500_000,
            "maxFeePerGas": self.w3.eth.gas_price * 2 + 10**9,
            "maxPriorityFeePerGas": 10**9,
        }
        signed = account.sign_transaction(tx)
        tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60)
        assert receipt["status"] == 1, f"transaction {tx_hash.hex()} reverted"
        return dict(receipt)


def lagos_date(unix: int) -> date:
    return datetime.fromtimestamp(unix, UTC).astimezone(LAGOS).date()
