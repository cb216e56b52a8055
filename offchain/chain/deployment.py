"""Deploy and wire LoanBook + DisbursementCommittee; write deployments/<network>.json.

Wiring (DESIGN §3): APPROVER_ROLE, PAUSER_ROLE, UNPAUSER_ROLE and DEFAULT_ADMIN_ROLE on the
LoanBook go to the committee; ORIGINATOR_ROLE and SERVICER_ROLE to the backend's sending key;
optionally PAUSER_ROLE (never UNPAUSER_ROLE) to an operations key, so an emergency stop by
operations is undone only by the committee's M-of-N; finally the deployer renounces its admin
role, so from then on only the committee (M-of-N) can change roles. `scripts/deploy.py` is the
command line over this; `caas up` calls it for the embedded default.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

from eth_account import Account
from eth_utils import keccak
from web3 import Web3
from web3.types import TxParams

from offchain.chain.artifacts import REPO_ROOT, compile_contract

DEFAULT_ADMIN_ROLE = b"\x00" * 32
DEPLOYMENTS_DIR = REPO_ROOT / "deployments"


def _role(name: str) -> bytes:
    return keccak(text=name)


class _Deployer:
    """Sends the deployment transactions from one key, waiting for each receipt."""

    def __init__(self, w3: Web3, private_key: str) -> None:
        self.w3 = w3
        self.account = Account.from_key(private_key)
        self.nonce: int = int(w3.eth.get_transaction_count(self.account.address, "pending"))

    def _send(self, tx: dict[str, Any]) -> Any:
        tx.setdefault("from", self.account.address)
        tx["nonce"] = self.nonce
        tx["chainId"] = self.w3.eth.chain_id
        tx.setdefault("gas", int(self.w3.eth.estimate_gas(cast(TxParams, tx)) * 1.2))
        latest = self.w3.eth.get_block("latest")
        tip = self.w3.to_wei(1, "gwei")
        tx["maxPriorityFeePerGas"] = tip
        tx["maxFeePerGas"] = 2 * latest["baseFeePerGas"] + tip
        signed = self.account.sign_transaction(tx)
        tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
        self.nonce += 1
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=120)
        if receipt["status"] != 1:
            raise RuntimeError(f"deployment transaction {tx_hash.hex()} reverted")
        return receipt

    def deploy(self, name: str, *args: Any) -> tuple[Any, int]:
        artifact = compile_contract(name)
        factory = self.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        receipt = self._send(factory.constructor(*args).build_transaction({"from": self.account.address}))
        contract = self.w3.eth.contract(address=receipt["contractAddress"], abi=artifact.abi)
        return contract, receipt["blockNumber"]

    def call(self, fn: Any) -> None:
        self._send(fn.build_transaction({"from": self.account.address}))


def deploy(
    *,
    rpc_url: str,
    deployer_key: str,
    signers: list[str],
    threshold: int,
    backend_address: str,
    network: str,
    default_after_days: int = 90,
    operations_pauser: str | None = None,
    out_dir: Path = DEPLOYMENTS_DIR,
) -> dict[str, Any]:
    """Deploy, wire, renounce, and write `<out_dir>/<network>.json`; returns its content."""
    w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 30}))
    deployer = _Deployer(w3, deployer_key)
    ordered_signers = sorted((Web3.to_checksum_address(s) for s in signers), key=lambda a: int(a, 16))

    loan_book, loan_book_block = deployer.deploy("LoanBook", default_after_days)
    committee, committee_block = deployer.deploy(
        "DisbursementCommittee", loan_book.address, ordered_signers, threshold
    )
    backend = Web3.to_checksum_address(backend_address)
    grants = [
        (_role("APPROVER_ROLE"), committee.address),
        (_role("PAUSER_ROLE"), committee.address),
        (_role("UNPAUSER_ROLE"), committee.address),
        (DEFAULT_ADMIN_ROLE, committee.address),
        (_role("ORIGINATOR_ROLE"), backend),
        (_role("SERVICER_ROLE"), backend),
    ]
    if operations_pauser:
        grants.append((_role("PAUSER_ROLE"), Web3.to_checksum_address(operations_pauser)))
    for role, account in grants:
        deployer.call(loan_book.functions.grantRole(role, account))
    deployer.call(loan_book.functions.renounceRole(DEFAULT_ADMIN_ROLE, deployer.account.address))

    if loan_book.functions.hasRole(DEFAULT_ADMIN_ROLE, deployer.account.address).call():
        raise RuntimeError("deployer still holds DEFAULT_ADMIN_ROLE after renouncing")

    deployment = {
        "chain_id": w3.eth.chain_id,
        "network": network,
        "contracts": {
            "LoanBook": {
                "address": loan_book.address,
                "abi": compile_contract("LoanBook").abi,
                "block": loan_book_block,
            },
            "DisbursementCommittee": {
                "address": committee.address,
                "abi": compile_contract("DisbursementCommittee").abi,
                "block": committee_block,
            },
        },
        "roles": {
            "committee": committee.address,
            "backend": backend,
            "signers": ordered_signers,
            "threshold": threshold,
            "default_after_days": default_after_days,
        },
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{network}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(deployment, indent=2) + "\n")
    tmp.replace(path)  # atomic: readers never see half a file
    return deployment
