"""What a close of business needs (database, chain, policy) and the names it shares with the
reads: the loans in repayment, the per-loan advisory lock."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

from eth_account import Account
from eth_utils import keccak

from offchain.chain.contracts import Deployment
from offchain.chain.jsonrpc import JsonRpc
from offchain.chain.sender import sending_keys
from offchain.domain import collections as rules
from offchain.domain.loan_book import LoanState
from offchain.platform.db import Database
from offchain.platform.logging import get_logger
from offchain.platform.problems import Problem
from offchain.platform.settings import CollectionsSettings, Settings
from offchain.services.collections.chain import LoanBookClient

log = get_logger(__name__)

NOTIFICATION_TOPIC = "notification.borrower.requested"
IN_REPAYMENT = (int(LoanState.ACTIVE), int(LoanState.DEFAULTED))


def policy_of(settings: CollectionsSettings) -> rules.CollectionsPolicy:
    return rules.CollectionsPolicy(
        due_reminders=dict(settings.due_reminders),
        missed_channel=settings.missed_channel,
        collection_after_dpd=settings.collection_after_dpd,
        dunning=tuple(rules.DunningStep(s.dpd, s.channel, s.template) for s in settings.dunning),
        late_fee_bps=settings.late_fee_bps,
        late_fee_min=settings.late_fee_min,
        write_off_after_dpd=settings.write_off_after_dpd,
    )


def lock_key(loan_id: uuid.UUID) -> int:
    """A signed 64-bit advisory lock key per loan, in a namespace of its own."""
    return int.from_bytes(keccak(text=f"caas.collections:{loan_id}")[:8], "big", signed=True)


@dataclass
class Collections:
    """What a close of business needs: database, chain and policy."""

    db: Database
    chain: LoanBookClient
    settings: CollectionsSettings
    sender_address: str | None = None
    _signers: list[str] | None = field(default=None, repr=False)

    @classmethod
    def from_settings(
        cls, settings: Settings, db: Database, deployment: Deployment | None = None
    ) -> Collections:
        """`deployment`: the app's, loaded once (offchain.chain.client); read here only if None."""
        if not settings.chain.rpc_url or not settings.chain.deployment_file:
            raise Problem(
                503,
                "urn:caas:problem:dependency-unavailable",
                title="Chain not configured",
                detail="CHAIN_RPC_URL and DEPLOYMENT_FILE are needed for a close of business",
            )
        rpc = JsonRpc(settings.chain.endpoints, timeout_s=settings.chain.rpc_timeout_s)  # failover
        keys = sending_keys(settings)
        return cls(
            db=db,
            chain=LoanBookClient(deployment or Deployment.load(settings.chain.deployment_file), rpc),
            settings=settings.collections,
            sender_address=Account.from_key(keys[0]).address.lower() if keys else None,
        )

    async def aclose(self) -> None:
        await self.chain.rpc.aclose()

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.settings.timezone)

    def today(self) -> date:
        return datetime.now(self.tz).date()

    async def backend_may_propose(self) -> bool:
        if self._signers is None:
            self._signers = await self.chain.committee_signers()
        return self.sender_address is not None and self.sender_address in self._signers


@dataclass
class LoanRow:
    id: uuid.UUID
    partner_id: uuid.UUID
    chain_loan_id: str
    sme_user_id: str | None
