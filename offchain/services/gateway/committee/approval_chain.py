"""What the approval use cases read from the chain: one consistent snapshot, and a simulation.

Every read of a snapshot is pinned to one block, so a loan approved between two calls can never
make the answers disagree (state PENDING from one block, a closed tally from the next).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from eth_utils import to_checksum_address
from web3 import AsyncWeb3
from web3.exceptions import ContractCustomError, ContractLogicError

from offchain.chain.contracts import Deployment
from offchain.domain.approvals import ApprovalTerms
from offchain.domain.loan_book import LoanState


@dataclass(frozen=True)
class Snapshot:
    block: int
    state: int
    terms: ApprovalTerms
    epoch: int
    signers: list[str]
    required: int  # 0 unless PENDING
    onchain: frozenset[str]  # signers whose on-chain `approve` counts in the open tally
    digest: bytes | None  # committee.approval_digest(loan, deadline), when asked for

    @property
    def state_name(self) -> str:
        return LoanState(self.state).name


def _committee(w3: AsyncWeb3, deployment: Deployment) -> Any:
    return w3.eth.contract(
        address=to_checksum_address(deployment.committee_address), abi=deployment.committee_abi
    )


async def snapshot(
    w3: AsyncWeb3, deployment: Deployment, chain_loan_id: bytes, *, deadline: int | None = None
) -> Snapshot:
    """The loan's state and terms and the committee's view of it, all at the latest block."""
    block = await w3.eth.block_number
    book = w3.eth.contract(
        address=to_checksum_address(deployment.loan_book_address), abi=deployment.loan_book_abi
    )
    committee = _committee(w3, deployment)
    row, epoch, signers = await asyncio.gather(
        book.functions.approval_terms(chain_loan_id).call(block_identifier=block),
        committee.functions.epoch().call(block_identifier=block),
        committee.functions.signers().call(block_identifier=block),
    )
    state, terms = ApprovalTerms.from_chain(row)
    signers = [to_checksum_address(s) for s in signers]
    if state != LoanState.PENDING:
        return Snapshot(block, state, terms, int(epoch), signers, 0, frozenset(), None)
    calls = [
        committee.functions.required_approvals(chain_loan_id).call(block_identifier=block),
        *(committee.functions.has_approved(chain_loan_id, s).call(block_identifier=block) for s in signers),
    ]
    if deadline is not None:
        calls.append(
            committee.functions.approval_digest(chain_loan_id, deadline).call(block_identifier=block)
        )
    answers = await asyncio.gather(*calls)
    required, flags = int(answers[0]), answers[1 : 1 + len(signers)]
    digest = bytes(answers[-1]) if deadline is not None else None
    onchain = frozenset(s for s, approved in zip(signers, flags, strict=True) if approved)
    return Snapshot(block, state, terms, int(epoch), signers, required, onchain, digest)


def revert_reason(error: Exception) -> str:
    message = getattr(error, "message", None) or str(error)
    return message.removeprefix("execution reverted: ").strip() or "reverted without a reason"


async def simulate_approval(
    w3: AsyncWeb3, deployment: Deployment, chain_loan_id: bytes, deadline: int, signatures: list[bytes]
) -> str | None:
    """None when `approve_with_signatures` would succeed now (eth_call); else the revert reason."""
    call = _committee(w3, deployment).functions.approve_with_signatures(chain_loan_id, deadline, signatures)
    try:
        await call.call(block_identifier="latest")
    except (ContractLogicError, ContractCustomError) as error:
        return revert_reason(error)
    return None


def approve_calldata(
    deployment: Deployment, chain_loan_id: bytes, deadline: int, signatures: list[bytes]
) -> str:
    committee = AsyncWeb3().eth.contract(
        address=to_checksum_address(deployment.committee_address), abi=deployment.committee_abi
    )
    return str(committee.encode_abi("approve_with_signatures", args=[chain_loan_id, deadline, signatures]))
