"""The degradation rules of health:8010 (offchain.domain.health) at their boundaries."""

from __future__ import annotations

from offchain.domain.health import (
    GroupBacklog,
    indexer_lag,
    judge_head,
    judge_indexer,
    judge_intents,
    judge_outbox,
    judge_streams,
)


def test_head_age_is_judged_only_with_a_block_time() -> None:
    assert judge_head(number=7, age_s=3600, max_age_s=None).status == "healthy"
    assert judge_head(number=7, age_s=12, max_age_s=12).status == "healthy"
    stale = judge_head(number=7, age_s=12.5, max_age_s=12)
    assert stale.status == "degraded"
    assert stale.detail.startswith("head stale: block 7")


def test_indexer_lag_counts_from_head_minus_confirmations() -> None:
    assert indexer_lag(head=100, confirmations=0, checkpoint=100) == 0
    assert indexer_lag(head=100, confirmations=5, checkpoint=95) == 0
    assert indexer_lag(head=100, confirmations=5, checkpoint=90) == 5
    assert indexer_lag(head=100, confirmations=5, checkpoint=99) == 0  # never negative
    assert judge_indexer(lag=20, checkpoint=80, max_lag=20).status == "healthy"
    assert judge_indexer(lag=21, checkpoint=79, max_lag=20).status == "degraded"
    assert judge_indexer(lag=None, checkpoint=None, max_lag=20).status == "degraded"


def test_outbox_degrades_on_the_age_of_its_oldest_row() -> None:
    assert judge_outbox(unpublished=0, oldest_age_s=None, max_age_s=30).status == "healthy"
    assert judge_outbox(unpublished=5_000, oldest_age_s=29, max_age_s=30).status == "healthy"
    assert judge_outbox(unpublished=1, oldest_age_s=31, max_age_s=30).status == "degraded"


def test_streams_degrade_per_group_not_on_the_total() -> None:
    groups = [GroupBacklog("a", "g1", pending=400, undelivered=600), GroupBacklog("b", "g2", 900, 0)]
    assert judge_streams(groups, {}, max_backlog=1_000).status == "healthy"
    over = [*groups, GroupBacklog("c", "g3", pending=1, undelivered=1_000)]
    verdict = judge_streams(over, {"g3": 2}, max_backlog=1_000)
    assert verdict.status == "degraded"
    assert "g3 on c" in verdict.detail and "dead letters g3=2" in verdict.detail


def test_intents_degrade_when_the_oldest_unfinished_one_is_too_old() -> None:
    assert (
        judge_intents(unfinished=0, oldest_age_s=None, failed_recently=3, max_age_s=300).status == "healthy"
    )
    assert judge_intents(unfinished=2, oldest_age_s=299, failed_recently=0, max_age_s=300).status == "healthy"
    stuck = judge_intents(unfinished=2, oldest_age_s=301, failed_recently=1, max_age_s=300)
    assert stuck.status == "degraded"
    assert "1 failed or reverted" in stuck.detail
