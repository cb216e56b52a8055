"""The backend's mirror of one LoanBook loan, folded from the loan's events.

LoanBook's events carry enough to replay every state change (DESIGN §3), so the mirror of
`LoanBook.loans(loan_id)` is a left fold over them in emission order. The same fold extends the
loan's running `event_chain` exactly as the contract does, which is what lets the indexer (and an
auditor) prove that the events it holds are complete.

Pure: event arguments arrive decoded (ints, 0x hex strings), timestamps as unix seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from offchain.domain.event_chain import GENESIS, link
from offchain.domain.loan_book import LoanState

TERMS = (
    "borrower_ref",
    "partner_ref",
    "currency",
    "principal",
    "total_due",
    "installment_count",
    "installment_interval",
    "grace_period",
    "max_late_fees",
    "payout_ref",
    "terms_hash",
)


@dataclass
class LoanMirror:
    chain_loan_id: str
    borrower_ref: str | None = None
    partner_ref: str | None = None
    currency: int | None = None
    principal: int | None = None
    total_due: int | None = None
    installment_count: int | None = None
    installment_interval: int | None = None
    grace_period: int | None = None
    max_late_fees: int | None = None
    payout_ref: str | None = None
    terms_hash: str | None = None
    chain_state: int = LoanState.NONE
    ever_defaulted: bool = False
    scheduled_repaid: int = 0
    late_fees_assessed: int = 0
    late_fees_paid: int = 0
    created_on_chain_at: int | None = None
    approved_at: int | None = None
    disbursed_at: int | None = None
    closed_at: int | None = None
    event_chain: bytes = GENESIS
    event_count: int = 0
    last_block_number: int | None = None
    last_log_index: int | None = None
    # events this fold could not apply (none on a well-formed chain); never persisted
    anomalies: list[str] = field(default_factory=list, compare=False, repr=False)

    @property
    def repaid(self) -> int:
        return self.scheduled_repaid + self.late_fees_paid

    @property
    def outstanding(self) -> int:
        """What `LoanBook.outstanding` returns: total_due + late fees - repaid; 0 for no loan."""
        if self.chain_state == LoanState.NONE or self.total_due is None:
            return 0
        return self.total_due + self.late_fees_assessed - self.repaid

    def apply(
        self,
        event: str,
        args: Mapping[str, Any],
        *,
        topics: Sequence[bytes],
        data: bytes,
        block_number: int,
        log_index: int,
        block_timestamp: int | None,
    ) -> None:
        """Fold one LoanBook event of this loan (already in emission order) into the mirror."""
        handler = _HANDLERS.get(event)
        if handler is None:
            self.anomalies.append(f"{event}@{block_number}:{log_index}: not a loan event")
        else:
            handler(self, args, block_timestamp)
        self.event_chain = link(self.event_chain, topics, data)
        self.event_count += 1
        self.last_block_number = block_number
        self.last_log_index = log_index

    def columns(self) -> dict[str, Any]:
        """The persisted fields, derived figures included."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "anomalies"}
        values["repaid"] = self.repaid
        values["outstanding"] = self.outstanding
        return values


def _created(loan: LoanMirror, args: Mapping[str, Any], ts: int | None) -> None:
    for name in TERMS:
        setattr(loan, name, args[name])
    loan.chain_state = LoanState.PENDING
    loan.created_on_chain_at = ts


def _approved(loan: LoanMirror, args: Mapping[str, Any], ts: int | None) -> None:
    loan.chain_state = LoanState.APPROVED
    loan.approved_at = ts


def _disbursed(loan: LoanMirror, args: Mapping[str, Any], ts: int | None) -> None:
    loan.chain_state = LoanState.ACTIVE
    loan.disbursed_at = int(args["disbursed_at"])


def _repayment(loan: LoanMirror, args: Mapping[str, Any], ts: int | None) -> None:
    # REPAID arrives as its own LoanRepaid event right after the closing repayment
    loan.late_fees_paid += int(args["fee_part"])
    loan.scheduled_repaid += int(args["scheduled_part"])


def _reversed(loan: LoanMirror, args: Mapping[str, Any], ts: int | None) -> None:
    loan.late_fees_paid -= int(args["fee_part"])
    loan.scheduled_repaid -= int(args["scheduled_part"])
    if loan.chain_state == LoanState.REPAID:
        loan.closed_at = None  # the loan reopens
    loan.chain_state = int(args["state_after"])


def _late_fee(loan: LoanMirror, args: Mapping[str, Any], ts: int | None) -> None:
    loan.late_fees_assessed = int(args["late_fees_assessed"])


def _repaid(loan: LoanMirror, args: Mapping[str, Any], ts: int | None) -> None:
    loan.chain_state = LoanState.REPAID
    loan.closed_at = int(args["repaid_at"])


def _defaulted(loan: LoanMirror, args: Mapping[str, Any], ts: int | None) -> None:
    loan.chain_state = LoanState.DEFAULTED
    loan.ever_defaulted = True


def _written_off(loan: LoanMirror, args: Mapping[str, Any], ts: int | None) -> None:
    loan.chain_state = LoanState.WRITTEN_OFF
    loan.closed_at = ts


def _cancelled(loan: LoanMirror, args: Mapping[str, Any], ts: int | None) -> None:
    loan.chain_state = LoanState.CANCELLED
    loan.closed_at = ts


_HANDLERS = {
    "LoanCreated": _created,
    "LoanApproved": _approved,
    "LoanDisbursed": _disbursed,
    "RepaymentRecorded": _repayment,
    "RepaymentReversed": _reversed,
    "LateFeeAssessed": _late_fee,
    "LoanRepaid": _repaid,
    "LoanDefaulted": _defaulted,
    "LoanWrittenOff": _written_off,
    "LoanCancelled": _cancelled,
}
LOAN_EVENTS = frozenset(_HANDLERS)


@dataclass(frozen=True)
class StoredEvent:
    """What a replay needs of one stored event."""

    event: str
    args: Mapping[str, Any]
    topics: Sequence[bytes]
    data: bytes
    block_number: int
    log_index: int
    block_timestamp: int | None


def replay(chain_loan_id: str, events: Iterable[StoredEvent]) -> LoanMirror:
    """The mirror of a loan from all of its events (in emission order), from nothing."""
    loan = LoanMirror(chain_loan_id=chain_loan_id)
    for e in events:
        loan.apply(
            e.event,
            e.args,
            topics=e.topics,
            data=e.data,
            block_number=e.block_number,
            log_index=e.log_index,
            block_timestamp=e.block_timestamp,
        )
    return loan


def differences(stored: Mapping[str, Any], recomputed: LoanMirror) -> dict[str, tuple[Any, Any]]:
    """Persisted field -> (stored, recomputed) wherever a stored mirror disagrees with a replay."""
    out: dict[str, tuple[Any, Any]] = {}
    for name, value in recomputed.columns().items():
        if name in stored and stored[name] != value:
            out[name] = (stored[name], value)
    return out
