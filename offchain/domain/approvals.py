"""The committee's EIP-712 approval message (DESIGN §3), as wallets and eth_account sign it.

`ApproveDisbursement` binds every economic term of the loan as LoanBook stores it, so a wallet
shows the terms in clear and no term can differ from what the signers saw. `approval_typed_data`
builds the document; `parse_signature` brings a signature to the one form the committee contract
(snekmate `ecdsa`) takes as it is, 65-byte (r, s, v) with v 27/28 and a low s, or refuses it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

DOMAIN_NAME = "CaaS Disbursement Committee"
DOMAIN_VERSION = "1"

APPROVE_DISBURSEMENT_TYPE = (
    "ApproveDisbursement(bytes32 loanId,bytes32 termsHash,uint16 currency,uint256 principal,"
    "uint256 totalDue,uint16 installmentCount,uint32 installmentInterval,uint32 gracePeriod,"
    "uint256 maxLateFees,bytes32 payoutRef,uint256 epoch,uint256 deadline)"
)

APPROVE_DISBURSEMENT_FIELDS = [
    {"name": "loanId", "type": "bytes32"},
    {"name": "termsHash", "type": "bytes32"},
    {"name": "currency", "type": "uint16"},
    {"name": "principal", "type": "uint256"},
    {"name": "totalDue", "type": "uint256"},
    {"name": "installmentCount", "type": "uint16"},
    {"name": "installmentInterval", "type": "uint32"},
    {"name": "gracePeriod", "type": "uint32"},
    {"name": "maxLateFees", "type": "uint256"},
    {"name": "payoutRef", "type": "bytes32"},
    {"name": "epoch", "type": "uint256"},
    {"name": "deadline", "type": "uint256"},
]

# secp256k1 group order and half of it: an s above half is the malleable twin of a valid
# signature, which the contract (snekmate ecdsa) refuses.
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
HALF_N = SECP256K1_N // 2

_HEX = re.compile(r"^0x[0-9a-fA-F]*$")


@dataclass(frozen=True)
class ApprovalTerms:
    """What `LoanBook.approval_terms(loan_id)` returns, minus the state: what a signer approves."""

    terms_hash: bytes
    currency: int
    principal: int
    total_due: int
    installment_count: int
    installment_interval: int
    grace_period: int
    max_late_fees: int
    payout_ref: bytes

    @classmethod
    def from_chain(cls, row: Sequence[Any]) -> tuple[int, ApprovalTerms]:
        """(state, terms) from the tuple `LoanBook.approval_terms` answers (ABI order)."""
        (
            state,
            currency,
            principal,
            total_due,
            installment_count,
            installment_interval,
            grace_period,
            max_late_fees,
            payout_ref,
            terms_hash,
        ) = row
        terms = cls(
            terms_hash=bytes(terms_hash),
            currency=int(currency),
            principal=int(principal),
            total_due=int(total_due),
            installment_count=int(installment_count),
            installment_interval=int(installment_interval),
            grace_period=int(grace_period),
            max_late_fees=int(max_late_fees),
            payout_ref=bytes(payout_ref),
        )
        return int(state), terms


def _hex32(value: bytes) -> str:
    if len(value) != 32:
        raise ValueError("expected 32 bytes")
    return "0x" + value.hex()


def approval_typed_data(
    *,
    chain_id: int,
    committee: str,
    loan_id: bytes,
    terms: ApprovalTerms,
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
            "termsHash": _hex32(terms.terms_hash),
            "currency": terms.currency,
            "principal": terms.principal,
            "totalDue": terms.total_due,
            "installmentCount": terms.installment_count,
            "installmentInterval": terms.installment_interval,
            "gracePeriod": terms.grace_period,
            "maxLateFees": terms.max_late_fees,
            "payoutRef": _hex32(terms.payout_ref),
            "epoch": epoch,
            "deadline": deadline,
        },
    }


# --- signatures ------------------------------------------------------------------------------


class SignatureRefused(ValueError):
    """A signature the committee contract would refuse (or could not parse); `reason` says why."""


def parse_signature(text: str) -> bytes:
    """The 65-byte (r, s, v) form, v 27/28, that `approve_with_signatures` accepts as it is.

    Accepted: 65 bytes with v 27/28 (wallets, eth_account), v 0/1 (the raw recovery id,
    "yParity", as hardware wallets and some libraries give it), v 35/36 (an EIP-155-style v of
    chain id 0, which some signing code applies to every signature: parity = v - 35), and EIP-2098
    compact 64-byte (r, yParityAndS) signatures. Whatever the form, the caller still checks that
    the normalized signature recovers to the named signer, so normalizing cannot make a wrong
    signature pass. Refused with a reason: any other v, any other length, malformed hex, a zero
    r or s, and a high s (the contract refuses the malleable twin).
    """
    if not isinstance(text, str) or not _HEX.match(text):
        raise SignatureRefused("not 0x-prefixed hex")
    digits = text[2:]
    if len(digits) % 2:
        raise SignatureRefused(f"odd number of hex digits ({len(digits)}): not whole bytes")
    raw = bytes.fromhex(digits)
    if len(raw) == 64:
        r, vs = raw[:32], int.from_bytes(raw[32:], "big")
        v = 27 + (vs >> 255)
        s = vs & ((1 << 255) - 1)
    elif len(raw) == 65:
        r, s, v = raw[:32], int.from_bytes(raw[32:64], "big"), raw[64]
        if v in (0, 1):
            v += 27
        elif v in (35, 36):
            v -= 8
        elif v not in (27, 28):
            raise SignatureRefused(
                f"v = {v}: sign the typed data with eth_signTypedData_v4 (v 27/28), "
                "or send v as 0/1 or an EIP-2098 64-byte signature"
            )
    else:
        raise SignatureRefused(f"{len(raw)} bytes: a signature is 65 bytes (r, s, v) or 64 (EIP-2098)")
    if int.from_bytes(r, "big") == 0 or s == 0:
        raise SignatureRefused("r or s is zero")
    if int.from_bytes(r, "big") >= SECP256K1_N or s >= SECP256K1_N:
        raise SignatureRefused("r or s is not below the curve order")
    if s > HALF_N:
        raise SignatureRefused("high-s signature (malleable); sign again with a standard wallet")
    return r + s.to_bytes(32, "big") + bytes([v])
