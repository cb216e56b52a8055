"""Hand-picked mutants of the contracts: each must make the contract tests fail.

    .venv/bin/python tests/contracts/mutants.py [--only NAME ...] [--stateful]

Each mutant is one textual edit of a contract. The script applies it, recompiles from clean
(`ape compile --force`: ape's incremental compile once reused stale bytecode), runs the tests
that should kill it, restores the file, and prints KILLED or SURVIVED per mutant. Not part of
`make test` (minutes per mutant); run it when the contracts or their tests change.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
UNIT_TESTS = [
    "tests/contracts/test_loan_book.py",
    "tests/contracts/test_committee.py",
    "tests/contracts/test_committee_governance.py",
]
STATEFUL = ["tests/contracts/stateful"]


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    old: str
    new: str
    why: str


MUTANTS = [
    Mutant(
        "dropped_last_installment_cap",
        "contracts/LoanBook.vy",
        "index: uint256 = min(status.scheduled_repaid // base + 1, schedule.installment_count)",
        "index: uint256 = status.scheduled_repaid // base + 1",
        "issue 20: survived all 220 tests (no test paid all but the remainder)",
    ),
    Mutant(
        "loan_defaulted_fields_swapped_in_event_chain",
        "contracts/LoanBook.vy",
        "abi_encode(self.event_chain[loan_id], _LOAN_DEFAULTED, loan_id, dpd, outstanding)",
        "abi_encode(self.event_chain[loan_id], _LOAN_DEFAULTED, loan_id, outstanding, dpd)",
        "issue 20: survived (no event-chain test emitted LoanDefaulted)",
    ),
    Mutant(
        "loan_written_off_outstanding_dropped_from_event_chain",
        "contracts/LoanBook.vy",
        "abi_encode(self.event_chain[loan_id], _LOAN_WRITTEN_OFF, loan_id, outstanding)",
        "abi_encode(self.event_chain[loan_id], _LOAN_WRITTEN_OFF, loan_id, empty(bytes32))",
        "no event-chain test emitted LoanWrittenOff",
    ),
    Mutant(
        "loan_cancelled_reason_dropped_from_event_chain",
        "contracts/LoanBook.vy",
        "abi_encode(self.event_chain[loan_id], _LOAN_CANCELLED, loan_id, reason)",
        "abi_encode(self.event_chain[loan_id], _LOAN_CANCELLED, loan_id, empty(bytes32))",
        "no event-chain test emitted LoanCancelled",
    ),
    Mutant(
        "scheduled_due_cap_dropped",
        "contracts/LoanBook.vy",
        "    if installments_due >= schedule.installment_count:\n        return schedule.total_due\n",
        "",
        "the other cap: what is due after the last due date",
    ),
    Mutant(
        "reversal_guard_removed",
        "contracts/LoanBook.vy",
        '== status.serial, "loan_book: payment of another loan"',
        '== status.serial or True, "loan_book: payment of another loan"',
        "a payment reversed against another loan",
    ),
    Mutant(
        "reversal_undoes_fees_first",
        "contracts/LoanBook.vy",
        "scheduled_part: uint256 = min(amount, status.scheduled_repaid)\n"
        "    # Never underflows: what was paid and not reversed covers this payment.\n"
        "    fee_part: uint256 = amount - scheduled_part",
        "fee_part: uint256 = min(amount, status.late_fees_paid)\n    scheduled_part: uint256 = amount - fee_part",
        "issue 15: unpaid fees on a fully paid schedule, never past due",
    ),
    Mutant(
        "written_off_recovery_closes_as_repaid",
        "contracts/LoanBook.vy",
        "closes: bool = outstanding_after == 0 and state != WRITTEN_OFF",
        "closes: bool = outstanding_after == 0",
        "a write-off is final",
    ),
    Mutant(
        "fees_assessed_bit_not_set",
        "contracts/LoanBook.vy",
        "        status.fees_assessed = True\n",
        "        status.fees_assessed = False\n",
        "record_repayment would skip the fee slot and ignore assessed fees",
    ),
    Mutant(
        "ops_pauser_can_unpause",
        "contracts/LoanBook.vy",
        "access_control._check_role(UNPAUSER_ROLE, msg.sender)\n    pausable._unpause()",
        "access_control._check_role(PAUSER_ROLE, msg.sender)\n    pausable._unpause()",
        "issue 20: an operations PAUSER undid a committee pause",
    ),
    Mutant(
        "total_due_not_signed",
        "contracts/DisbursementCommittee.vy",
        "            terms.total_due,\n            terms.installment_count,",
        "            terms.principal,\n            terms.installment_count,",
        "issue 20: signers approved less than the loan",
    ),
    Mutant(
        "grace_period_not_signed",
        "contracts/DisbursementCommittee.vy",
        "            terms.grace_period,\n            terms.max_late_fees,",
        "            terms.installment_interval,\n            terms.max_late_fees,",
        "issue 20: a term set by the originator alone",
    ),
    Mutant(
        "approvals_view_reverts_after_approval",
        "contracts/DisbursementCommittee.vy",
        "    if staticcall LOAN_BOOK.loan_state(loan_id) != _LOAN_PENDING:\n        return 0\n",
        '    assert staticcall LOAN_BOOK.loan_state(loan_id) == _LOAN_PENDING, "committee: loan not pending"\n',
        "issue 19: an auditor's call after approval threw",
    ),
]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{REPO / '.venv/bin'}:{REPO / 'node_modules/.bin'}:{env.get('PATH', '')}"
    return env


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=REPO, env=_env(), capture_output=True, text=True, check=False)


def run(mutant: Mutant, tests: list[str]) -> tuple[bool, str, float]:
    path = REPO / mutant.path
    original = path.read_text()
    if original.count(mutant.old) != 1:
        raise SystemExit(f"{mutant.name}: the text to mutate is not found exactly once in {mutant.path}")
    started = time.monotonic()
    try:
        path.write_text(original.replace(mutant.old, mutant.new))
        compiled = _run([str(REPO / ".venv/bin/ape"), "compile", "--force"])
        if compiled.returncode != 0:
            return True, "does not compile", time.monotonic() - started
        result = _run([str(REPO / ".venv/bin/ape"), "test", *tests, "-q", "-x", "-p", "no:cacheprovider"])
        failed = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
        return (
            result.returncode != 0,
            (failed[0] if failed else result.stdout[-200:]),
            time.monotonic() - started,
        )
    finally:
        path.write_text(original)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="*", default=None, help="mutant names")
    parser.add_argument("--stateful", action="store_true", help="run the Hypothesis state machine instead")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if args.only is None or m.name in args.only]
    tests = STATEFUL if args.stateful else UNIT_TESTS
    survivors = 0
    for mutant in chosen:
        killed, detail, seconds = run(mutant, tests)
        survivors += not killed
        print(f"{'KILLED  ' if killed else 'SURVIVED'} {mutant.name} ({seconds:.0f} s): {detail}", flush=True)
    _run([str(REPO / ".venv/bin/ape"), "compile", "--force"])  # leave the real bytecode behind
    sys.exit(1 if survivors else 0)


if __name__ == "__main__":
    main()
