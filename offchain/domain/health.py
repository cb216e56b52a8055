"""When a measured platform signal makes the platform `degraded`: pure rules, no I/O.

health:8010 measures (chain head, indexer checkpoint, outbox, stream groups, transaction intents)
and asks these functions for a verdict; thresholds come from settings (HealthSettings).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

Status = Literal["healthy", "degraded", "down"]


@dataclass(frozen=True)
class Verdict:
    status: Status
    detail: str


def _age(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def judge_head(*, number: int, age_s: float, max_age_s: float | None) -> Verdict:
    """A head older than `max_age_s` means the chain (or our node) stopped making blocks.

    Without a block time the age says nothing (automine mines only when asked), so it is
    reported but never judged.
    """
    detail = f"block {number}, {_age(max(age_s, 0.0))} old"
    if max_age_s is not None and age_s > max_age_s:
        return Verdict("degraded", f"head stale: {detail} (limit {_age(max_age_s)})")
    return Verdict("healthy", detail)


def indexer_lag(*, head: int, confirmations: int, checkpoint: int) -> int:
    """Blocks the indexer still has to index: it aims at head - confirmations, never beyond."""
    return max(0, head - confirmations - checkpoint)


def judge_indexer(*, lag: int | None, checkpoint: int | None, max_lag: int) -> Verdict:
    if checkpoint is None or lag is None:
        return Verdict("degraded", "no checkpoint yet: the indexer has not indexed this chain")
    detail = f"checkpoint {checkpoint}, {lag} blocks behind"
    if lag > max_lag:
        return Verdict("degraded", f"indexer lags: {detail} (limit {max_lag})")
    return Verdict("healthy", detail)


def judge_outbox(*, unpublished: int, oldest_age_s: float | None, max_age_s: float) -> Verdict:
    if not unpublished or oldest_age_s is None:
        return Verdict("healthy", "0 unpublished")
    detail = f"{unpublished} unpublished, oldest {_age(oldest_age_s)}"
    if oldest_age_s > max_age_s:
        return Verdict("degraded", f"outbox backs up: {detail} (limit {_age(max_age_s)})")
    return Verdict("healthy", detail)


@dataclass(frozen=True)
class GroupBacklog:
    stream: str
    group: str
    pending: int  # delivered, not acknowledged
    undelivered: int  # in the stream after the group's last delivered id

    @property
    def backlog(self) -> int:
        return self.pending + self.undelivered


def judge_streams(
    groups: Iterable[GroupBacklog], dead_letters: Mapping[str, int], *, max_backlog: int
) -> Verdict:
    groups = list(groups)
    over = [g for g in groups if g.backlog > max_backlog]
    dead = {name: count for name, count in dead_letters.items() if count}
    total = sum(g.backlog for g in groups)
    parts = [f"{len(groups)} consumer groups, backlog {total}"]
    if dead:
        parts.append("dead letters " + ", ".join(f"{name}={count}" for name, count in sorted(dead.items())))
    if over:
        worst = max(over, key=lambda g: g.backlog)
        parts.insert(
            0,
            f"queue backs up: {worst.group} on {worst.stream} has {worst.pending} pending + "
            f"{worst.undelivered} undelivered (limit {max_backlog})",
        )
        return Verdict("degraded", "; ".join(parts))
    return Verdict("healthy", "; ".join(parts))


def judge_intents(
    *, unfinished: int, oldest_age_s: float | None, failed_recently: int, max_age_s: float
) -> Verdict:
    detail = f"{unfinished} not final"
    if unfinished and oldest_age_s is not None:
        detail += f", oldest {_age(oldest_age_s)}"
    if failed_recently:
        detail += f"; {failed_recently} failed or reverted in the last hour"
    if unfinished and oldest_age_s is not None and oldest_age_s > max_age_s:
        return Verdict("degraded", f"transactions stuck: {detail} (limit {_age(max_age_s)})")
    return Verdict("healthy", detail)
