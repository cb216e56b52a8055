"""Payouts of approved loans: ledger hold -> rail transfer -> verified outcome -> chain record.

The rules that make a double payout impossible:
- one payout row per loan (primary key) and one transfer reference per loan, derived from it
  (offchain.domain.money_movement.payout_reference): the rail refuses a second transfer under it
  while one is in flight, so a crash between "transfer sent" and "commit" is harmless -- the next
  attempt re-sends the same reference and gets the transfer that exists;
- a new transfer under the reference is initiated only after the rail said, when asked, that the
  previous one conclusively failed or was reversed (webhooks are hints; `verify_transfer` is the truth);
- the ledger hold of attempt n (posting "payout:<loan>:<n>") is posted on success, voided on
  failure, reversed if a paid transfer is reversed later; record_disbursement is requested once.

Every state change happens with the payout row locked (FOR UPDATE), in one transaction with its
ledger postings, chain intent and outbox events.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.chain.contracts import Deployment
from offchain.chain.sender import submit
from offchain.domain import money_movement
from offchain.domain.money import from_iso_numeric
from offchain.domain.monitoring import MonitoringPolicy
from offchain.persistence import ledger as journal
from offchain.persistence.credit import Origination
from offchain.persistence.models import Loan
from offchain.persistence.money import Payout
from offchain.platform.logging import get_logger
from offchain.platform.settings import MoneySettings
from offchain.rails.paystack.client import (
    PaystackClient,
    PaystackError,
    PaystackNotFound,
    PaystackRejected,
)
from offchain.rails.paystack.models import Transfer, TransferStatus
from offchain.rails.sme.payments import (
    SmePaymentNotFound,
    SmePaymentsUnavailable,
    SmeWalletClient,
    WalletTransfer,
    WalletTransferRefused,
)
from offchain.services import monitoring

log = get_logger(__name__)

DEFAULT_POLICY = MonitoringPolicy()
APPROVED = 2


@dataclass(frozen=True)
class PayoutContext:
    """What moving a payout needs besides its session: the rail, the policy, the contracts."""

    paystack: PaystackClient
    settings: MoneySettings
    deployment: Deployment
    wallet: SmeWalletClient | None = None  # payouts to SME wallets (method "wallet")


@dataclass(frozen=True)
class RailView:
    """What a rail says of the transfer under a payout's reference, in Paystack's vocabulary."""

    status: TransferStatus
    code: str | None = None

    @classmethod
    def of_paystack(cls, transfer: Transfer) -> RailView:
        return cls(transfer.status, transfer.transfer_code)

    @classmethod
    def of_wallet(cls, transfer: WalletTransfer) -> RailView:
        status = {"successful": TransferStatus.SUCCESS, "failed": TransferStatus.FAILED}.get(
            transfer.status, TransferStatus.PENDING
        )
        return cls(status, transfer.transfer_id)


def hold_id(loan_id: uuid.UUID, attempt: int) -> str:
    return f"payout:{loan_id}:{attempt}"


def disburse_intent_key(loan_id: uuid.UUID) -> str:
    return f"disburse:{loan_id}"


def _now() -> datetime:
    return datetime.now(UTC)


def retry_delay(settings: MoneySettings, attempt: int) -> timedelta:
    seconds = min(settings.payout_retry_base_s * 2 ** max(attempt - 1, 0), settings.payout_retry_max_s)
    return timedelta(seconds=seconds)


# --- the hold, at approval ---------------------------------------------------------------------


async def open_payout(
    session: AsyncSession, *, chain_loan_id: str, policy: MonitoringPolicy = DEFAULT_POLICY
) -> Payout | None:
    """On LoanApproved: the payout row and the hold of its first attempt, once per loan.

    Returns None for a loan the backend did not originate (nothing to pay it to) or does not
    know yet.
    """
    row = (
        await session.execute(
            select(Loan, Origination)
            .join(Origination, Origination.loan_id == Loan.id)
            .where(Loan.chain_loan_id == chain_loan_id.lower())
        )
    ).first()
    if row is None:
        log.warning("payout.unknown_loan", chain_loan_id=chain_loan_id)
        return None
    loan, origination = row
    if loan.principal is None or loan.total_due is None or loan.currency is None:
        raise RuntimeError(f"loan {loan.id} is approved but its terms are not indexed yet")
    currency = from_iso_numeric(loan.currency)
    account_name = (origination.agreement.get("payout") or {}).get("account_name")
    inserted = (
        await session.execute(
            pg_insert(Payout)
            .values(
                loan_id=loan.id,
                partner_id=loan.partner_id,
                chain_loan_id=loan.chain_loan_id,
                # wallets are the SME platform's own; banks and virtual accounts go through Paystack
                rail=money_movement.SME if origination.payout_method == "wallet" else money_movement.PAYSTACK,
                reference=money_movement.payout_reference(loan.id),
                method=origination.payout_method,
                bank_code=origination.payout_bank_code,
                account_number=origination.payout_account_number,
                account_name=account_name,
                amount=loan.principal,
                total_due=loan.total_due,
                currency=currency,
            )
            .on_conflict_do_nothing(index_elements=[Payout.loan_id])
            .returning(Payout.loan_id)
        )
    ).first()
    payout = await lock_payout(session, loan.id)
    if inserted is not None and payout is not None:
        await place_hold(session, payout)
        log.info("payout.opened", loan_id=str(loan.id), reference=payout.reference, amount=payout.amount)
        flags = await monitoring.check_payout(session, payout, policy)
        if flags:
            # nothing leaves before someone looks: the hold stays, the transfer waits
            payout.status = "review"
            payout.last_error = "held by transaction monitoring: " + ", ".join(f.rule for f in flags)
    return payout


async def place_hold(session: AsyncSession, payout: Payout) -> None:
    await journal.hold(
        session,
        money_movement.payout_posting(
            posting_id=hold_id(payout.loan_id, payout.attempt),
            loan_id=payout.loan_id,
            partner_id=payout.partner_id,
            principal=payout.amount,
            total_due=payout.total_due,
            currency=payout.currency,
        ),
    )


async def lock_payout(session: AsyncSession, loan_id: uuid.UUID) -> Payout | None:
    return (
        await session.execute(
            select(Payout)
            .where(Payout.loan_id == loan_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()


async def lock_payout_by_reference(session: AsyncSession, reference: str) -> Payout | None:
    return (
        await session.execute(
            select(Payout)
            .where(Payout.reference == reference)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()


# --- sending ----------------------------------------------------------------------------------


async def initiate(session: AsyncSession, payout: Payout, ctx: PayoutContext) -> None:
    """Send the transfer of the payout's current attempt (row locked, status queued).

    Only reached for a reference with no transfer in flight: the first attempt, or a retry
    after `apply_transfer` saw a conclusive failure. Re-sending after a crash is safe: the rail
    answers with the transfer that exists under the reference.
    """
    settings = ctx.settings
    if payout.rail == money_movement.SME:
        await _initiate_wallet(session, payout, ctx)
        return
    try:
        if payout.recipient_code is None:
            recipient = await ctx.paystack.create_recipient(
                name=payout.account_name or settings.default_account_name,
                account_number=payout.account_number,
                bank_code=payout.bank_code or "",
                currency=payout.currency,
                metadata={"loan_id": str(payout.loan_id)},
            )
            payout.recipient_code = recipient.recipient_code
        transfer = await ctx.paystack.initiate_transfer(
            amount=payout.amount,
            recipient_code=payout.recipient_code,
            reference=payout.reference,
            reason=f"Loan {payout.loan_id}",
            currency=payout.currency,
        )
    except PaystackRejected as error:
        # Refused outright (bad account, balance): no transfer exists, so this attempt failed.
        await _attempt_failed(session, payout, settings, reason=f"rail refused: {error.message}")
        return
    except PaystackError as error:
        # Unknown whether the rail got it: stay queued; the same reference is sent again.
        payout.last_error = f"rail unavailable: {error.message}"
        payout.next_attempt_at = _now() + timedelta(seconds=max(settings.worker_poll_s, 1.0))
        return
    payout.status = "initiated"
    payout.transfer_code = transfer.transfer_code
    payout.provider_status = transfer.status.value
    payout.last_error = None
    if transfer.status.conclusive:
        await apply_outcome(session, payout, RailView.of_paystack(transfer), ctx)


async def _initiate_wallet(session: AsyncSession, payout: Payout, ctx: PayoutContext) -> None:
    if ctx.wallet is None:
        payout.status, payout.last_error = "review", "no SME wallet rail configured"
        return
    try:
        transfer = await ctx.wallet.transfer(
            reference=payout.reference,
            wallet_id=payout.account_number,
            amount=payout.amount,
            currency=payout.currency,
        )
    except WalletTransferRefused as error:
        await _attempt_failed(session, payout, ctx.settings, reason=f"wallet rail refused: {error}")
        return
    except SmePaymentsUnavailable as error:
        payout.last_error = f"wallet rail unavailable: {error}"
        payout.next_attempt_at = _now() + timedelta(seconds=max(ctx.settings.worker_poll_s, 1.0))
        return
    payout.status = "initiated"
    view = RailView.of_wallet(transfer)
    payout.transfer_code, payout.provider_status, payout.last_error = view.code, view.status.value, None
    if view.status.conclusive:
        await apply_outcome(session, payout, view, ctx)


# --- outcomes ----------------------------------------------------------------------------------


async def apply_transfer(
    session: AsyncSession, payout: Payout, transfer: Transfer, ctx: PayoutContext
) -> None:
    await apply_outcome(session, payout, RailView.of_paystack(transfer), ctx)


async def apply_outcome(session: AsyncSession, payout: Payout, view: RailView, ctx: PayoutContext) -> None:
    """Act on the rail's verified view of the payout's transfer (row locked). Idempotent."""
    status = view.status
    payout.provider_status = status.value
    if status.paid_out:
        if payout.status in ("queued", "initiated"):
            await journal.post_pending(session, hold_id(payout.loan_id, payout.attempt))
            payout.status = "succeeded"
            payout.transfer_code = view.code
            payout.last_error = None
            log.info("payout.succeeded", loan_id=str(payout.loan_id), attempt=payout.attempt)
            await _request_chain_record(session, payout, ctx.deployment)
        return
    if not status.conclusive:
        return
    # failed / reversed / abandoned / blocked / rejected
    if payout.status == "succeeded":
        # paid, then reversed by the bank: undo the posting and pay again under the same reference
        await journal.reverse(
            session,
            hold_id(payout.loan_id, payout.attempt),
            reversal_id=f"{hold_id(payout.loan_id, payout.attempt)}:reversed",
            description=f"transfer {payout.reference} {status.value} after success",
        )
        await _requeue(session, payout, ctx.settings, reason=f"transfer {status.value} after success")
    elif payout.status == "initiated":
        await _attempt_failed(session, payout, ctx.settings, reason=f"transfer {status.value}")
    # queued: the rail shows an earlier attempt's outcome (or one a crash hid); the worker re-sends


async def _attempt_failed(
    session: AsyncSession, payout: Payout, settings: MoneySettings, *, reason: str
) -> None:
    await journal.void_pending(session, hold_id(payout.loan_id, payout.attempt))
    await _requeue(session, payout, settings, reason=reason)


async def _requeue(session: AsyncSession, payout: Payout, settings: MoneySettings, *, reason: str) -> None:
    payout.last_error = reason
    if payout.attempt >= settings.payout_max_attempts:
        payout.status = "abandoned"
        log.warning("payout.abandoned", loan_id=str(payout.loan_id), attempts=payout.attempt, reason=reason)
        return
    payout.attempt += 1
    payout.status = "queued"
    payout.next_attempt_at = _now() + retry_delay(settings, payout.attempt - 1)
    await place_hold(session, payout)
    log.info("payout.retry_scheduled", loan_id=str(payout.loan_id), attempt=payout.attempt, reason=reason)


async def _request_chain_record(session: AsyncSession, payout: Payout, deployment: Deployment) -> None:
    if payout.chain_requested:
        return  # a re-payout after a reversal: the chain already has this loan's disbursement
    data = deployment.loan_book_contract.record_disbursement(
        bytes.fromhex(payout.chain_loan_id[2:]),
        payout.amount,
        bytes.fromhex((await _payout_ref(session, payout.loan_id))[2:]),
        money_movement.rail_ref(payout.rail, payout.reference),
    )
    await submit(
        session,
        caller="disbursement",
        deployment=deployment,
        idempotency_key=disburse_intent_key(payout.loan_id),
        to=deployment.loan_book_address,
        data=data,
    )
    payout.chain_requested = True


async def _payout_ref(session: AsyncSession, loan_id: uuid.UUID) -> str:
    value = (await session.execute(select(Loan.payout_ref).where(Loan.id == loan_id))).scalar_one()
    if value is None:
        raise RuntimeError(f"loan {loan_id} has no indexed payout_ref")
    return str(value)


async def check_with_rail(session: AsyncSession, payout: Payout, ctx: PayoutContext) -> None:
    """Ask the rail for the transfer under the payout's reference and act on the answer."""
    try:
        if payout.rail == money_movement.SME:
            if ctx.wallet is None:
                return
            view = RailView.of_wallet(await ctx.wallet.verify(payout.reference))
        else:
            view = RailView.of_paystack(await ctx.paystack.verify_transfer(payout.reference))
    except (PaystackNotFound, SmePaymentNotFound):
        if payout.status == "initiated":
            # the rail has no transfer under our reference: it never got it -- send again
            payout.status = "queued"
            payout.next_attempt_at = _now()
        return
    await apply_outcome(session, payout, view, ctx)


# --- the worker's round -----------------------------------------------------------------------


@dataclass
class RoundResult:
    initiated: int = 0
    verified: int = 0


async def due_payouts(session: AsyncSession, *, limit: int, verify_after_s: float) -> list[Payout]:
    """Payouts to send now, and sent ones the rail has been silent about, skipping locked rows."""
    rows = await session.execute(
        select(Payout)
        .where(
            text(
                "(status = 'queued' AND next_attempt_at <= now()) OR "
                "(status = 'initiated' AND updated_at <= now() - make_interval(secs => :after))"
            ).bindparams(after=verify_after_s)
        )
        .order_by(Payout.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )
    return list(rows.scalars())
