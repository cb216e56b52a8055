"""The committee's EIP-712 approval message (DESIGN §3), as wallets and eth_account sign it."""

from __future__ import annotations

from typing import Any

DOMAIN_NAME = "CaaS Disbursement Committee"
DOMAIN_VERSION = "1"

APPROVE_DISBURSEMENT_FIELDS = [
    {"name": "loanId", "type": "bytes32"},
    {"name": "termsHash", "type": "bytes32"},
    {"name": "principal", "type": "uint256"},
    {"name": "payoutRef", "type": "bytes32"},
    {"name": "epoch", "type": "uint256"},
    {"name": "deadline", "type": "uint256"},
]


def _hex32(value: bytes) -> str:
    if len(value) != 32:
        raise ValueError("expected 32 bytes")
    return "0x" + value.hex()


def approval_typed_data(
    *,
    chain_id: int,
    committee: str,
    loan_id: bytes,
    terms_hash: bytes,
    principal: int,
    payout_ref: bytes,
    epoch: int,
    deadline: int,
) -> dict[str, Any]:
    """Full EIP-712 JSON for `encode_typed_data(full_message=...)` / `eth_signTypedData_v4`.

    bytes32 values are 0x-hex strings so the document is plain JSON a partner can hand to any wallet.
    """
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "ApproveDisbursement": APPROVE_DISBURSEMENT_FIELDS,
        },
        "primaryType": "ApproveDisbursement",
        "domain": {
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": chain_id,
            "verifyingContract": committee,
        },
        "message": {
            "loanId": _hex32(loan_id),
            "termsHash": _hex32(terms_hash),
            "principal": principal,
            "payoutRef": _hex32(payout_ref),
            "epoch": epoch,
            "deadline": deadline,
        },
    }
