"""A Deployment of the real contracts' ABIs at addresses no chain has, for tests whose intents
are recorded (and checked against the allowlist, which reads the ABIs) but never sent.

Imported as `offline_deployment` (tests/offchain is on sys.path through its conftest).
"""

from __future__ import annotations

from offchain.chain.artifacts import compile_contract
from offchain.chain.contracts import Deployment

OFFLINE_DEPLOYMENT = Deployment(
    chain_id=31337,
    loan_book_address="0x" + "42" * 20,
    loan_book_abi=compile_contract("LoanBook").abi,
    loan_book_block=0,
    committee_address="0x" + "43" * 20,
    committee_abi=compile_contract("DisbursementCommittee").abi,
    committee_block=0,
)
