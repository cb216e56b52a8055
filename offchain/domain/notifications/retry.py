"""When a failed webhook delivery is tried again, and when it is given up (dead-lettered)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float = 30.0
    max_interval_s: float = 6 * 3600.0
    window_s: float = 3 * 86_400.0
    jitter: float = 0.2

    def delay(self, failed_attempts: int, *, rng: random.Random | None = None) -> float:
        """Seconds to wait after the `failed_attempts`-th failure (1-based): exponential, capped,
        with +/- jitter so endpoints coming back from an outage are not hit by every retry at once."""
        if failed_attempts < 1:
            raise ValueError("failed_attempts starts at 1")
        # min() before the power would overflow floats for very long histories
        exponent = min(failed_attempts - 1, 64)
        nominal = min(self.base_s * 2.0**exponent, self.max_interval_s)
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return nominal * (1.0 + spread)

    def next_attempt(
        self,
        *,
        failed_attempts: int,
        window_started_at: datetime,
        now: datetime,
        rng: random.Random | None = None,
    ) -> datetime | None:
        """When to try again, or None when that would fall outside the window (dead-letter)."""
        at = now + timedelta(seconds=self.delay(failed_attempts, rng=rng))
        if at > window_started_at + timedelta(seconds=self.window_s):
            return None
        return at

    def nominal_schedule(self) -> list[float]:
        """Offsets (seconds after the first attempt) of every attempt without jitter."""
        offsets, elapsed, failures = [0.0], 0.0, 1
        while True:
            elapsed += min(self.base_s * 2.0 ** min(failures - 1, 64), self.max_interval_s)
            if elapsed > self.window_s:
                return offsets
            offsets.append(elapsed)
            failures += 1
