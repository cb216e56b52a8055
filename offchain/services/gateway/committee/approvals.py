"""Committee approvals through the API: the EIP-712 request signers sign, and their signatures.

A state machine per loan (its `caas_approval_rounds` row, locked FOR UPDATE, serializes every
post for the loan):

    collecting --(kept signatures + on-chain approvals reach the requirement,
                  the eth_call of approve_with_signatures passes)--> submitted (intent attempt k)
    submitted --(the intent reverts or fails at estimation)--> collecting (the next is attempt k+1)
    submitted --(mined: LoanBook says APPROVED)--> done; the loan is no longer PENDING

A signature is checked as the contract will check it before it is kept: normalized to the one
65-byte form `approve_with_signatures` takes (v 27/28, low s; `parse_signature`), recovered
against the digest the committee itself computes (`approval_digest` at the same block), its
signer a current signer in the current epoch. Before submitting, the whole set is simulated with
eth_call; a kept signature that would make it revert (e.g. one kept before these checks existed)
is dropped and reported instead of blocking the others. While a submission is in flight, and once
the loan has left PENDING, both routes answer 409 with the state.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

from eth_account import Account
from eth_account.messages import _hash_eip191_message, encode_typed_data
from eth_utils import to_checksum_address
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.chain.contracts import Deployment
from offchain.chain.jsonrpc import JsonRpc
from offchain.chain.sender import FAILED, REVERTED, get_intent, submit
from offchain.domain.approvals import SignatureRefused, approval_typed_data, parse_signature
from offchain.domain.loan_book import LoanState
from offchain.persistence.credit import ApprovalRound, ApprovalSignature, Origination
from offchain.persistence.models import Loan, TxIntent
from offchain.platform.logging import get_logger
from offchain.platform.problems import Problem, not_found
from offchain.services.gateway.committee import schemas
from offchain.services.gateway.committee.approval_chain import (
    Snapshot,
    approve_calldata,
    simulate_approval,
    snapshot,
)

log = get_logger(__name__)

# One deadline per loan, fixed when the loan was accepted: every signer signs the same document,
# and a signature cannot outlive the offer it approves by more than this.
APPROVAL_WINDOW = timedelta(days=7)
_REFUSED = "urn:caas:problem:approval-refused"
_NOT_PENDING = "urn:caas:problem:loan-not-pending"
_IN_FLIGHT = "urn:caas:problem:approval-in-flight"
_FINISHED = (REVERTED, FAILED)


def _refused(reason: str, field: str = "signature") -> Problem:
    return Problem(
        422, _REFUSED, title="Approval refused", detail=reason, errors=[{"field": field, "reason": reason}]
    )


def deadline_of(origination: Origination) -> int:
    """The loan's approval deadline (unix seconds): accepted at + APPROVAL_WINDOW."""
    return int((origination.created_at + APPROVAL_WINDOW).timestamp())


def intent_key(chain_loan_id: str, epoch: int, attempt: int) -> str:
    return f"approve_with_signatures:{chain_loan_id}:{epoch}:{attempt}"


async def _loan_and_origination(session: AsyncSession, loan_id: uuid.UUID) -> tuple[Loan, Origination]:
    loan = await session.get(Loan, loan_id)
    origination = await session.get(Origination, loan_id)
    if loan is None or origination is None:
        raise not_found("loan", loan_id)
    return loan, origination


async def _round(session: AsyncSession, loan: Loan, *, lock: bool) -> ApprovalRound | None:
    """The loan's approval round; with `lock`, created if missing and locked to this transaction."""
    if lock:
        await session.execute(
            insert(ApprovalRound)
            .values(loan_id=loan.id, partner_id=loan.partner_id)
            .on_conflict_do_nothing(index_elements=[ApprovalRound.loan_id])
        )
    query = (
        select(ApprovalRound)
        .where(ApprovalRound.loan_id == loan.id)
        .execution_options(populate_existing=True)
    )
    if lock:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def _in_flight(session: AsyncSession, round_: ApprovalRound | None) -> TxIntent | None:
    """The latest submission's intent, unless it failed (then the loan is approvable again)."""
    if round_ is None or round_.tx_intent_key is None:
        return None
    intent = await get_intent(session, round_.tx_intent_key)
    if intent is None or intent.status in _FINISHED:
        return None
    return intent


def _refuse_unless_open(chain: Snapshot, intent: TxIntent | None) -> None:
    if chain.state != LoanState.PENDING:
        raise Problem(
            409,
            _NOT_PENDING,
            title="Loan is not awaiting approval",
            detail=f"the loan is {chain.state_name} on chain",
            state=chain.state_name,
        )
    if intent is not None:
        raise Problem(
            409,
            _IN_FLIGHT,
            title="Approval is being submitted",
            detail=(
                f"approve_with_signatures is on its way (tx intent {intent.idempotency_key}, "
                f"{intent.status}); the loan is still {chain.state_name} on chain"
            ),
            state=chain.state_name,
            approval="submitted",
            tx_intent=intent.idempotency_key,
            tx_status=intent.status,
        )


def _typed_data(
    deployment: Deployment, chain: Snapshot, chain_loan_id: bytes, deadline: int
) -> dict[str, Any]:
    return approval_typed_data(
        chain_id=deployment.chain_id,
        committee=deployment.committee_address,
        loan_id=chain_loan_id,
        terms=chain.terms,
        epoch=chain.epoch,
        deadline=deadline,
    )


async def _kept(session: AsyncSession, loan_id: uuid.UUID, epoch: int) -> dict[str, tuple[str, str]]:
    """Checksum signer -> (the signer as stored, the signature) of the epoch's kept signatures."""
    rows = await session.execute(
        select(ApprovalSignature.signer, ApprovalSignature.signature).where(
            ApprovalSignature.loan_id == loan_id, ApprovalSignature.epoch == epoch
        )
    )
    return {to_checksum_address(signer): (signer, signature) for signer, signature in rows.all()}


def _recovers_to(digest: bytes, signature: bytes) -> str | None:
    try:
        return str(Account._recover_hash(digest, signature=signature))
    except Exception:  # eth_keys raises several kinds for a point off the curve
        return None


async def approval_request(
    *, session: AsyncSession, rpc: JsonRpc, deployment: Deployment, loan_id: uuid.UUID
) -> schemas.ApprovalRequestOut:
    loan, origination = await _loan_and_origination(session, loan_id)
    chain_loan_id = bytes.fromhex(loan.chain_loan_id[2:])
    chain = await snapshot(rpc, deployment, chain_loan_id)
    _refuse_unless_open(chain, await _in_flight(session, await _round(session, loan, lock=False)))
    deadline = deadline_of(origination)
    kept = await _kept(session, loan_id, chain.epoch)
    counted = sorted(chain.onchain | (set(kept) & set(chain.signers)), key=lambda a: int(a, 16))
    return schemas.ApprovalRequestOut(
        typed_data=_typed_data(deployment, chain, chain_loan_id, deadline),
        required=chain.required,
        approvals=len(counted),
        signers=chain.signers,
        epoch=chain.epoch,
        deadline=deadline,
        signed_by=counted,
    )


async def add_approval(
    *,
    session: AsyncSession,
    rpc: JsonRpc,
    deployment: Deployment,
    partner_id: uuid.UUID,
    loan_id: uuid.UUID,
    body: schemas.ApprovalIn,
) -> dict[str, Any]:
    loan, origination = await _loan_and_origination(session, loan_id)
    chain_loan_id = bytes.fromhex(loan.chain_loan_id[2:])
    deadline = deadline_of(origination)
    # Malformed input is refused before anything is locked or read from the chain.
    try:
        signature = parse_signature(body.signature)
    except SignatureRefused as refusal:
        raise _refused(str(refusal)) from refusal
    if body.deadline is not None and body.deadline != deadline:
        raise _refused(
            f"the loan's approval deadline is {deadline}: sign the typed data from approval-request",
            "deadline",
        )
    signer = to_checksum_address(body.signer)

    round_ = await _round(session, loan, lock=True)  # every post for this loan waits here
    assert round_ is not None
    chain = await snapshot(rpc, deployment, chain_loan_id, deadline=deadline)
    _refuse_unless_open(chain, await _in_flight(session, round_))
    if deadline < int(time.time()):
        raise _refused("the loan's approval deadline has passed", "deadline")
    if signer not in chain.signers:
        raise _refused(f"not a committee signer in the current epoch ({chain.epoch})", "signer")
    typed = _typed_data(deployment, chain, chain_loan_id, deadline)
    digest = _hash_eip191_message(encode_typed_data(full_message=typed))
    if digest != chain.digest:  # pragma: no cover - the typed data and the contract disagree: a bug here
        raise Problem(503, "urn:caas:problem:dependency-unavailable", title="Approval digest mismatch")
    if _recovers_to(digest, signature) != signer:
        raise _refused(
            "the signature is not this signer's approval of the loan's current terms, epoch and deadline "
            "(sign typed_data from approval-request)"
        )

    await session.execute(
        insert(ApprovalSignature)
        .values(
            loan_id=loan_id,
            epoch=chain.epoch,
            signer=signer,
            partner_id=partner_id,
            signature="0x" + signature.hex(),
            deadline=deadline,
        )
        .on_conflict_do_update(
            index_elements=[ApprovalSignature.loan_id, ApprovalSignature.epoch, ApprovalSignature.signer],
            set_={"signature": "0x" + signature.hex(), "deadline": deadline},
        )
    )
    result: dict[str, Any] = {
        "loan_id": str(loan_id),
        "signer": signer,
        "state": "collecting",
        "submitted": False,
    }
    result.update(
        await _submit_if_reached(session, deployment, rpc, loan, round_, chain, chain_loan_id, deadline)
    )
    return result


async def _submit_if_reached(
    session: AsyncSession,
    deployment: Deployment,
    rpc: JsonRpc,
    loan: Loan,
    round_: ApprovalRound,
    chain: Snapshot,
    chain_loan_id: bytes,
    deadline: int,
) -> dict[str, Any]:
    """At the requirement: drop what would revert, simulate, and submit one intent (attempt k+1)."""
    assert chain.digest is not None
    kept = await _kept(session, loan.id, chain.epoch)
    dropped: list[dict[str, str]] = []
    usable: dict[str, bytes] = {}
    stored: list[str] = []
    for signer, (as_stored, text) in kept.items():
        # rows kept before the checks above existed (or by a bug) are checked again here
        try:
            signature = parse_signature(text)
        except SignatureRefused as refusal:
            dropped.append({"signer": signer, "reason": str(refusal)})
            stored.append(as_stored)
            continue
        if signer not in chain.signers or _recovers_to(chain.digest, signature) != signer:
            stored.append(as_stored)
            dropped.append(
                {"signer": signer, "reason": "does not recover to its signer under the loan's digest"}
            )
            continue
        if signer not in chain.onchain:  # approved on chain already: counted without it
            usable[signer] = signature

    blocked = None
    while len(chain.onchain) + len(usable) >= chain.required:
        ordered = [usable[s] for s in sorted(usable, key=lambda a: int(a, 16))]
        blocked = await simulate_approval(rpc, deployment, chain_loan_id, deadline, ordered)
        if blocked is None:
            break
        culprit = await _culprit(rpc, deployment, chain, chain_loan_id, deadline, usable)
        if culprit is None:
            break  # not one signature's fault (paused, expired...): keep them all, report it
        dropped.append({"signer": culprit, "reason": f"the submission would revert with it: {blocked}"})
        stored.append(kept[culprit][0])
        del usable[culprit]
        blocked = None

    if dropped:
        await session.execute(
            delete(ApprovalSignature).where(
                ApprovalSignature.loan_id == loan.id,
                ApprovalSignature.epoch == chain.epoch,
                ApprovalSignature.signer.in_(stored),
            )
        )
        log.warning("approval.signatures_dropped", loan_id=str(loan.id), dropped=dropped)
    approvals = len(chain.onchain) + len(usable)
    out: dict[str, Any] = {"approvals": approvals, "required": chain.required, "dropped": dropped}
    if approvals < chain.required or blocked is not None:
        out["blocked"] = blocked
        return out

    ordered = [usable[s] for s in sorted(usable, key=lambda a: int(a, 16))]
    attempt = round_.attempts + 1
    key = intent_key(loan.chain_loan_id, chain.epoch, attempt)
    await submit(
        session,
        caller="gateway",
        deployment=deployment,
        idempotency_key=key,
        to=deployment.committee_address,
        data=approve_calldata(deployment, chain_loan_id, deadline, ordered),
    )
    round_.attempts, round_.epoch, round_.tx_intent_key = attempt, chain.epoch, key
    log.info("approval.submitted", loan_id=str(loan.id), tx_intent=key, signatures=len(ordered))
    return {**out, "state": "submitted", "submitted": True, "tx_intent": key, "attempt": attempt}


async def _culprit(
    rpc: JsonRpc,
    deployment: Deployment,
    chain: Snapshot,
    chain_loan_id: bytes,
    deadline: int,
    usable: dict[str, bytes],
) -> str | None:
    """The one signature without which the simulation passes, if there is a spare to leave out."""
    if len(chain.onchain) + len(usable) - 1 < chain.required:
        return None
    for signer in sorted(usable, key=lambda a: int(a, 16)):
        rest = [usable[s] for s in sorted(usable, key=lambda a: int(a, 16)) if s != signer]
        if await simulate_approval(rpc, deployment, chain_loan_id, deadline, rest) is None:
            return signer
    return None
