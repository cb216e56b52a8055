"""Contract bindings from `deployments/<network>.json` — the only source of addresses and ABIs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import to_checksum_address

from offchain.chain.binding import Committee, LoanBook
from offchain.domain.approvals import ApprovalTerms, approval_typed_data

if TYPE_CHECKING:  # web3 only for the operator CLI's transactions, never in a service
    from web3 import Web3


@dataclass(frozen=True)
class Deployment:
    chain_id: int
    loan_book_address: str
    loan_book_abi: list[dict]
    loan_book_block: int
    committee_address: str
    committee_abi: list[dict]
    committee_block: int

    @classmethod
    def load(cls, path: str | Path) -> Deployment:
        data = json.loads(Path(path).read_text())
        book, committee = data["contracts"]["LoanBook"], data["contracts"]["DisbursementCommittee"]
        return cls(
            chain_id=data["chain_id"],
            loan_book_address=book["address"],
            loan_book_abi=book["abi"],
            loan_book_block=book["block"],
            committee_address=committee["address"],
            committee_abi=committee["abi"],
            committee_block=committee["block"],
        )

    @cached_property
    def loan_book_contract(self) -> LoanBook:
        """The typed LoanBook binding (offchain.chain.binding), built once per deployment."""
        return LoanBook(self.loan_book_address, self.loan_book_abi)

    @cached_property
    def committee_contract(self) -> Committee:
        """The typed DisbursementCommittee binding, built once per deployment."""
        return Committee(self.committee_address, self.committee_abi)

    # web3 contract objects: for the operator CLI (caas sign) that sends from an operator's key
    def loan_book(self, w3: Web3) -> Any:
        return w3.eth.contract(address=to_checksum_address(self.loan_book_address), abi=self.loan_book_abi)

    def committee(self, w3: Web3) -> Any:
        return w3.eth.contract(address=to_checksum_address(self.committee_address), abi=self.committee_abi)


def approval_request(w3: Web3, deployment: Deployment, loan_id: bytes, deadline: int) -> dict:
    """The EIP-712 document a signer signs to approve `loan_id`, read live from the chain."""
    state, terms = ApprovalTerms.from_chain(deployment.loan_book(w3).functions.approval_terms(loan_id).call())
    if state != 1:
        raise ValueError(f"loan is not pending approval (state {state})")
    return approval_typed_data(
        chain_id=w3.eth.chain_id,
        committee=deployment.committee_address,
        loan_id=loan_id,
        terms=terms,
        epoch=deployment.committee(w3).functions.epoch().call(),
        deadline=deadline,
    )


def sign_approval(typed_data: dict, private_key: str) -> tuple[str, bytes]:
    """(signer address, 65-byte signature) exactly as a wallet produces it."""
    signed = Account.sign_message(encode_typed_data(full_message=typed_data), private_key)
    return Account.from_key(private_key).address, bytes(signed.signature)


def sort_signatures(signed: list[tuple[str, bytes]]) -> list[bytes]:
    """The committee wants signatures ordered by signer address, ascending."""
    return [sig for _, sig in sorted(signed, key=lambda pair: int(pair[0], 16))]
