"""What the approval use cases read from the chain: one consistent snapshot, and a simulation.

Every read of a snapshot is pinned to one block, so a loan approved between two calls can never
make the answers disagree (state PENDING from one block, a closed tally from the next).
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_utils import to_checksum_address

from offchain.chain.contracts import Deployment
from offchain.chain.jsonrpc import JsonRpc, RpcError, hex_int
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


async def snapshot(
    rpc: JsonRpc, deployment: Deployment, chain_loan_id: bytes, *, deadline: int | None = None
) -> Snapshot:
    """The loan's state and terms and the committee's view of it, all at the latest block."""
    block = hex_int(await rpc.call("eth_blockNumber"))
    book, committee = deployment.loan_book_contract, deployment.committee_contract
    answers = await rpc.batch(
        [
            book.call_request("approval_terms", chain_loan_id, block=block),
            committee.call_request("epoch", block=block),
            committee.call_request("signers", block=block),
        ]
    )
    row = book.decode("approval_terms", answers[0])[0]
    epoch = committee.decode("epoch", answers[1])[0]
    state, terms = ApprovalTerms.from_chain(row)
    signers: list[str] = [to_checksum_address(s) for s in committee.decode("signers", answers[2])[0]]
    if state != LoanState.PENDING:
        return Snapshot(block, state, terms, int(epoch), signers, 0, frozenset(), None)
    calls = [
        committee.call_request("required_approvals", chain_loan_id, block=block),
        *(committee.call_request("has_approved", chain_loan_id, s, block=block) for s in signers),
    ]
    if deadline is not None:
        calls.append(committee.call_request("approval_digest", chain_loan_id, deadline, block=block))
    answers = await rpc.batch(calls)
    required = int(committee.decode("required_approvals", answers[0])[0])
    flags = [committee.decode("has_approved", raw)[0] for raw in answers[1 : 1 + len(signers)]]
    digest = bytes(committee.decode("approval_digest", answers[-1])[0]) if deadline is not None else None
    onchain = frozenset(s for s, approved in zip(signers, flags, strict=True) if approved)
    return Snapshot(block, state, terms, int(epoch), signers, required, onchain, digest)


def revert_reason(error: Exception) -> str:
    if isinstance(error, RpcError):
        return error.revert_reason()
    message = getattr(error, "message", None) or str(error)
    return message.removeprefix("execution reverted: ").strip() or "reverted without a reason"


async def simulate_approval(
    rpc: JsonRpc, deployment: Deployment, chain_loan_id: bytes, deadline: int, signatures: list[bytes]
) -> str | None:
    """None when `approve_with_signatures` would succeed now (eth_call); else the revert reason."""
    committee = deployment.committee_contract
    method, params = committee.call_request(
        "approve_with_signatures", chain_loan_id, deadline, list(signatures), block="latest"
    )
    try:
        await rpc.call(method, *params)
    except RpcError as error:
        if not error.is_revert:
            raise  # the node did not answer: not a verdict on the signatures
        return revert_reason(error)
    return None


def approve_calldata(
    deployment: Deployment, chain_loan_id: bytes, deadline: int, signatures: list[bytes]
) -> str:
    return deployment.committee_contract.approve_with_signatures(chain_loan_id, deadline, signatures)
