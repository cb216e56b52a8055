"""Gas table of the contracts, measured on a fresh Anvil: `make gas` (or `python bench/gas.py`).

Each figure is the `gasUsed` of one real transaction in a realistic sequence (a loan's life, the
committee's paths), so it includes the 21k base cost and calldata. Prints a markdown table;
`--write` replaces the gas section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from eth_account import Account
from eth_utils import keccak
from report import write_section  # bench/ is on sys.path when run as a script
from web3 import Web3

from offchain.chain.contracts import Deployment, approval_request, sign_approval, sort_signatures
from offchain.chain.deployment import deploy
from offchain.platform.devkeys import anvil_accounts

REPO = Path(__file__).resolve().parents[1]
DAY = 86_400
TARGETS = {
    "LoanBook.create_loan": "≤ 200,000 (stretch 150,000)",
    "DisbursementCommittee.approve_with_signatures, 2 of 3 (incl. LoanBook.approve_loan)": (
        "≤ 100,000 (stretch 85,000)"
    ),
    "… each extra signature": "≤ 8,000",
    "LoanBook.record_disbursement": "≤ 70,000",
    "LoanBook.record_repayment (partial)": "≤ 65,000 (issue 20)",
    "DisbursementCommittee.propose (write_off)": "≤ 120,000 (issue 20)",
}
# Before issue 20 (docs/BENCHMARKS.md of 2026-12-07), printed beside the new figures.
BEFORE = {
    "LoanBook.create_loan": 168_606,
    "DisbursementCommittee.approve (1st of 2, below threshold)": 63_481,
    "DisbursementCommittee.approve (2nd, executes approve_loan)": 60_071,
    "DisbursementCommittee.approve_with_signatures, 2 of 3 (incl. LoanBook.approve_loan)": 74_467,
    "DisbursementCommittee.approve_with_signatures, 3 of 3": 82_153,
    "LoanBook.record_disbursement": 45_704,
    "LoanBook.record_repayment (partial)": 68_629,
    "LoanBook.record_repayment (second partial)": 68_629,
    "LoanBook.reverse_repayment": 52_332,
    "LoanBook.assess_late_fee": 68_796,
    "LoanBook.record_repayment (pays a late fee first)": 68_629,
    "LoanBook.record_repayment (closing, emits LoanRepaid)": 70_756,
    "LoanBook.mark_default": 45_144,
    "DisbursementCommittee.propose (write_off)": 170_244,
    "DisbursementCommittee.confirm": 48_431,
    "DisbursementCommittee.execute (LoanBook.write_off)": 88_742,
    "LoanBook.cancel_loan": 41_966,
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def anvil(accounts: int = 12):
    port = _free_port()
    binary = shutil.which("anvil") or str(REPO / "node_modules/.bin/anvil")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--accounts", str(accounts), "--silent"],
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        w3 = Web3(Web3.HTTPProvider(url))
        for _ in range(100):
            with contextlib.suppress(Exception):
                if w3.is_connected():
                    break
            time.sleep(0.05)
        yield url, w3
    finally:
        process.terminate()
        process.wait(timeout=10)


class Sender:
    def __init__(self, w3: Web3, key: str) -> None:
        self.w3, self.account = w3, Account.from_key(key)

    def send(self, fn) -> dict:
        tx = fn.build_transaction({"from": self.account.address, "gas": 3_000_000})
        tx["nonce"] = self.w3.eth.get_transaction_count(self.account.address)
        signed = self.account.sign_transaction(tx)
        receipt = self.w3.eth.wait_for_transaction_receipt(
            self.w3.eth.send_raw_transaction(signed.raw_transaction)
        )
        assert receipt["status"] == 1, f"reverted: {fn.fn_name}"
        return receipt


def _terms(i: int, principal: int = 100_000_00) -> tuple:
    return (
        keccak(text=f"borrower:{i}"),
        keccak(text="partner:1"),
        566,
        principal,
        principal * 112 // 100,
        4,
        30 * DAY,
        3 * DAY,
        5_000_00,
        keccak(text=f"payout:{i}"),
        keccak(text=f"agreement:{i}"),
    )


def _sign_approval(w3, deployment, loan_id: bytes, keys: list[str], deadline: int) -> list[bytes]:
    typed = approval_request(w3, deployment, loan_id, deadline)
    return sort_signatures([sign_approval(typed, key) for key in keys])


def measure() -> list[tuple[str, int]]:
    accounts = anvil_accounts(12)
    deployer, backend = accounts[0], accounts[1]
    signer_accounts = accounts[2:10]  # eight signers for the per-signature figures
    rows: list[tuple[str, int]] = []
    with anvil(12) as (url, w3), tempfile.TemporaryDirectory() as out:
        deployment = deploy(
            rpc_url=url,
            deployer_key=deployer.private_key,
            signers=[a.address for a in signer_accounts[:3]],
            threshold=2,
            backend_address=backend.address,
            network="gas",
            out_dir=Path(out),
        )
        info = deployment["contracts"]
        bound = Deployment.load(Path(out) / "gas.json")
        book, committee = bound.loan_book(w3), bound.committee(w3)
        for name in ("LoanBook", "DisbursementCommittee"):
            block = w3.eth.get_block(info[name]["block"], full_transactions=True)
            receipt = w3.eth.get_transaction_receipt(block["transactions"][0]["hash"])
            rows.append((f"{name} deployment", receipt["gasUsed"]))

        sender = Sender(w3, backend.private_key)
        signers = sorted(signer_accounts[:3], key=lambda a: int(a.address, 16))
        by_signer = {a.address: Sender(w3, a.private_key) for a in signers}
        anyone = Sender(w3, accounts[11].private_key)

        def new_loan(i: int, principal: int = 100_000_00) -> bytes:
            loan_id = keccak(text=f"loan:{i}")
            r = sender.send(book.functions.create_loan(loan_id, _terms(i, principal)))
            rows.append(("LoanBook.create_loan", r["gasUsed"])) if i == 1 else None
            return loan_id

        # on-chain approvals: first below threshold, second reaches it
        loan = new_loan(1)
        r = by_signer[signers[0].address].send(committee.functions.approve(loan))
        rows.append(("DisbursementCommittee.approve (1st of 2, below threshold)", r["gasUsed"]))
        r = by_signer[signers[1].address].send(committee.functions.approve(loan))
        rows.append(("DisbursementCommittee.approve (2nd, executes approve_loan)", r["gasUsed"]))

        deadline = w3.eth.get_block("latest")["timestamp"] + 3600
        loan2 = new_loan(2)
        sigs = _sign_approval(w3, bound, loan2, [s.private_key for s in signers[:2]], deadline)
        r = anyone.send(committee.functions.approve_with_signatures(loan2, deadline, sigs))
        rows.append(
            (
                "DisbursementCommittee.approve_with_signatures, 2 of 3 (incl. LoanBook.approve_loan)",
                r["gasUsed"],
            )
        )
        two_of_three = r["gasUsed"]
        loan3 = new_loan(3)
        sigs = _sign_approval(w3, bound, loan3, [s.private_key for s in signers], deadline)
        r = anyone.send(committee.functions.approve_with_signatures(loan3, deadline, sigs))
        rows.append(("DisbursementCommittee.approve_with_signatures, 3 of 3", r["gasUsed"]))
        rows.append(("… each extra signature", r["gasUsed"] - two_of_three))

        # a loan's life
        payout = _terms(1)[9]
        r = sender.send(book.functions.record_disbursement(loan, 100_000_00, payout, keccak(text="TRF1")))
        rows.append(("LoanBook.record_disbursement", r["gasUsed"]))
        r = sender.send(book.functions.record_repayment(loan, 28_000_00, keccak(text="paystack:T1")))
        rows.append(("LoanBook.record_repayment (partial)", r["gasUsed"]))
        r = sender.send(book.functions.record_repayment(loan, 28_000_00, keccak(text="paystack:T2")))
        rows.append(("LoanBook.record_repayment (second partial)", r["gasUsed"]))
        r = sender.send(
            book.functions.reverse_repayment(loan, keccak(text="paystack:T2"), keccak(text="chargeback"))
        )
        rows.append(("LoanBook.reverse_repayment", r["gasUsed"]))
        w3.provider.make_request("evm_increaseTime", [70 * DAY])
        r = sender.send(book.functions.assess_late_fee(loan, 1_000_00, keccak(text="late_fee:1")))
        rows.append(("LoanBook.assess_late_fee", r["gasUsed"]))
        r = sender.send(book.functions.record_repayment(loan, 2_000_00, keccak(text="paystack:T3")))
        rows.append(("LoanBook.record_repayment (pays a late fee first)", r["gasUsed"]))
        outstanding = book.functions.outstanding(loan).call()
        r = sender.send(book.functions.record_repayment(loan, outstanding, keccak(text="paystack:T4")))
        rows.append(("LoanBook.record_repayment (closing, emits LoanRepaid)", r["gasUsed"]))

        # default and write-off through governance
        r = sender.send(
            book.functions.record_disbursement(loan2, 100_000_00, _terms(2)[9], keccak(text="TRF2"))
        )
        w3.provider.make_request("evm_increaseTime", [130 * DAY])
        r = sender.send(book.functions.mark_default(loan2))
        rows.append(("LoanBook.mark_default", r["gasUsed"]))
        expires = w3.eth.get_block("latest")["timestamp"] + 7 * DAY
        write_off = committee.functions.ACTION_WRITE_OFF().call()
        zero = "0x" + "00" * 20
        first = by_signer[signers[0].address]
        r = first.send(committee.functions.propose(write_off, zero, loan2, 0, expires))
        proposal_id = committee.functions.proposal_count().call()
        rows.append(("DisbursementCommittee.propose (write_off)", r["gasUsed"]))
        r = by_signer[signers[1].address].send(committee.functions.confirm(proposal_id))
        rows.append(("DisbursementCommittee.confirm", r["gasUsed"]))
        r = first.send(committee.functions.execute(proposal_id))
        rows.append(("DisbursementCommittee.execute (LoanBook.write_off)", r["gasUsed"]))

        loan4 = new_loan(4)
        r = sender.send(book.functions.cancel_loan(loan4, keccak(text="withdrawn")))
        rows.append(("LoanBook.cancel_loan", r["gasUsed"]))
    return rows


def table(rows: list[tuple[str, int]]) -> str:
    lines = ["| call | gas used | before issue 20 | target |", "|---|---:|---:|---|"]
    for name, gas in rows:
        before = f"{BEFORE[name]:,}" if name in BEFORE else ""
        lines.append(f"| {name} | {gas:,} | {before} | {TARGETS.get(name, '')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="update docs/BENCHMARKS.md")
    args = parser.parse_args()
    rendered = table(measure())
    print(rendered)
    if args.write:
        write_section("gas", "Contract gas (`make gas`)", rendered)


if __name__ == "__main__":
    main()
