"""Committee approvals through the API: the EIP-712 request signers sign, and their signatures.

Each signature is checked as the contract will check it (current signer, current epoch, the
loan's live terms, deadline, low-s, no duplicate) before it is kept; when kept signatures plus
on-chain approvals reach the loan's required count, one `approve_with_signatures` goes to the
transaction sender, keyed by loan and epoch so it is sent once.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import to_checksum_address
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from web3 import AsyncWeb3

from offchain.chain.contracts import Deployment
from offchain.chain.sender import submit
from offchain.domain.approvals import approval_typed_data
from offchain.domain.loan_book import LoanState
from offchain.persistence.credit import ApprovalSignature, Origination
from offchain.persistence.models import Loan
from offchain.platform.problems import Problem
from offchain.services.gateway import schemas
from offchain.services.gateway.usecases import not_found

# secp256k1 n / 2: signatures with a higher s are malleable twins; the contract refuses them.
_HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0
APPROVAL_WINDOW = timedelta(days=7)
_REFUSED = "urn:caas:problem:approval-refused"


@dataclass(frozen=True)
class LiveTerms:
    state: int
    principal: int
    payout_ref: bytes
    terms_hash: bytes
    epoch: int
    required: int
    approvals: int
    signers: list[str]


def _refused(reason: str, field: str = "signature") -> Problem:
    return Problem(
        422, _REFUSED, title="Approval refused", detail=reason, errors=[{"field": field, "reason": reason}]
    )


async def live_terms(w3: AsyncWeb3, deployment: Deployment, chain_loan_id: bytes) -> LiveTerms:
    book = w3.eth.contract(address=deployment.loan_book_address, abi=deployment.loan_book_abi)
    committee = w3.eth.contract(address=deployment.committee_address, abi=deployment.committee_abi)
    state, principal, payout_ref, terms_hash = await book.functions.approval_terms(chain_loan_id).call()
    epoch = await committee.functions.epoch().call()
    signers = [to_checksum_address(s) for s in await committee.functions.signers().call()]
    if state != LoanState.PENDING:
        return LiveTerms(state, principal, payout_ref, terms_hash, epoch, 0, 0, signers)
    required = await committee.functions.required_approvals(chain_loan_id).call()
    approvals = await committee.functions.approvals(chain_loan_id).call()
    return LiveTerms(state, principal, payout_ref, terms_hash, epoch, required, approvals, signers)


def _deadline(origination: Origination) -> int:
    """One deadline per loan, so every signer signs the same document."""
    return int((origination.created_at + APPROVAL_WINDOW).timestamp())


async def _loan_and_origination(session: AsyncSession, loan_id: uuid.UUID) -> tuple[Loan, Origination]:
    loan = await session.get(Loan, loan_id)
    origination = await session.get(Origination, loan_id)
    if loan is None or origination is None:
        raise not_found("loan", loan_id)
    return loan, origination


async def approval_request(
    *, session: AsyncSession, w3: AsyncWeb3, deployment: Deployment, loan_id: uuid.UUID
) -> schemas.ApprovalRequestOut:
    loan, origination = await _loan_and_origination(session, loan_id)
    chain_loan_id = bytes.fromhex(loan.chain_loan_id[2:])
    terms = await live_terms(w3, deployment, chain_loan_id)
    if terms.state != LoanState.PENDING:
        raise Problem(
            409,
            "urn:caas:problem:loan-not-pending",
            title="Loan is not awaiting approval",
            detail=f"the loan is {LoanState(terms.state).name} on chain",
        )
    typed = approval_typed_data(
        chain_id=await w3.eth.chain_id,
        committee=deployment.committee_address,
        loan_id=chain_loan_id,
        terms_hash=terms.terms_hash,
        principal=terms.principal,
        payout_ref=terms.payout_ref,
        epoch=terms.epoch,
        deadline=_deadline(origination),
    )
    kept = await _kept_signers(session, loan_id, terms.epoch)
    return schemas.ApprovalRequestOut(
        typed_data=typed,
        required=terms.required,
        approvals=terms.approvals + len(kept),
        signers=terms.signers,
        epoch=terms.epoch,
    )


async def _kept_signers(session: AsyncSession, loan_id: uuid.UUID, epoch: int) -> dict[str, str]:
    rows = await session.execute(
        select(ApprovalSignature.signer, ApprovalSignature.signature).where(
            ApprovalSignature.loan_id == loan_id, ApprovalSignature.epoch == epoch
        )
    )
    return {signer: signature for signer, signature in rows.all()}


async def add_approval(
    *,
    session: AsyncSession,
    w3: AsyncWeb3,
    deployment: Deployment,
    partner_id: uuid.UUID,
    loan_id: uuid.UUID,
    body: schemas.ApprovalIn,
) -> dict[str, Any]:
    loan, origination = await _loan_and_origination(session, loan_id)
    chain_loan_id = bytes.fromhex(loan.chain_loan_id[2:])
    terms = await live_terms(w3, deployment, chain_loan_id)
    if terms.state != LoanState.PENDING:
        raise Problem(
            409,
            "urn:caas:problem:loan-not-pending",
            title="Loan is not awaiting approval",
            detail=f"the loan is {LoanState(terms.state).name} on chain",
        )
    deadline = _deadline(origination)
    if body.deadline is not None and body.deadline != deadline:
        raise _refused("sign the typed data from approval-request: its deadline is the loan's", "deadline")
    if deadline < int(time.time()):
        raise _refused("the signature's deadline has passed", "deadline")
    signer = to_checksum_address(body.signer)
    if signer not in terms.signers:
        raise _refused("not a current committee signer", "signer")
    typed = approval_typed_data(
        chain_id=await w3.eth.chain_id,
        committee=deployment.committee_address,
        loan_id=chain_loan_id,
        terms_hash=terms.terms_hash,
        principal=terms.principal,
        payout_ref=terms.payout_ref,
        epoch=terms.epoch,
        deadline=deadline,
    )
    signature = bytes.fromhex(body.signature[2:])
    if len(signature) != 65:
        raise _refused("a signature is 65 bytes (r, s, v)")
    if int.from_bytes(signature[32:64], "big") > _HALF_N:
        raise _refused("high-s signature (malleable); sign again with a standard wallet")
    try:
        recovered = Account.recover_message(encode_typed_data(full_message=typed), signature=signature)
    except Exception as error:  # eth_keys raises several kinds for garbage input
        raise _refused(f"signature does not recover: {error}") from error
    if recovered != signer:
        raise _refused("the signature is not the signer's approval of this loan's current terms and epoch")

    await session.execute(
        insert(ApprovalSignature)
        .values(
            loan_id=loan_id,
            epoch=terms.epoch,
            signer=signer,
            partner_id=partner_id,
            signature=body.signature.lower(),
            deadline=deadline,
        )
        .on_conflict_do_nothing()
    )
    committee = w3.eth.contract(address=deployment.committee_address, abi=deployment.committee_abi)
    kept = await _kept_signers(session, loan_id, terms.epoch)
    # Kept signatures of signers who also approved on chain count once (the contract agrees).
    fresh = {
        s: sig
        for s, sig in kept.items()
        if not await committee.functions.has_approved(chain_loan_id, s).call()
    }
    total = terms.approvals + len(fresh)
    submitted = None
    if total >= terms.required:
        ordered = [bytes.fromhex(fresh[s][2:]) for s in sorted(fresh, key=lambda a: int(a, 16))]
        calldata = committee.encode_abi("approve_with_signatures", args=[chain_loan_id, deadline, ordered])
        key = f"approve_with_signatures:{loan.chain_loan_id}:{terms.epoch}"
        await submit(
            session,
            caller="gateway",
            deployment=deployment,
            idempotency_key=key,
            to=deployment.committee_address,
            data=calldata,
        )
        submitted = key
    return {
        "loan_id": str(loan_id),
        "signer": signer,
        "approvals": total,
        "required": terms.required,
        "submitted": submitted is not None,
        "tx_intent": submitted,
    }
