"""Where the scorecard artefacts live: `offchain/domain/underwriting/models/<version>.json`.

`CURRENT` in that folder names the version in force; `scripts/fit_scorecard.py` writes both. The
services only read: a model is loaded once at start-up, its content checked against its version.
"""

from __future__ import annotations

from pathlib import Path

from offchain.domain.underwriting.scorecard import ModelError, ScorecardModel

MODELS_DIR = Path(__file__).resolve().parents[2] / "domain" / "underwriting" / "models"
CURRENT = "CURRENT"


def current_version(directory: Path = MODELS_DIR) -> str:
    pointer = directory / CURRENT
    if not pointer.is_file():
        raise ModelError(f"no {CURRENT} file in {directory}: run scripts/fit_scorecard.py")
    return pointer.read_text().strip()


def load_model(version: str, directory: Path = MODELS_DIR) -> ScorecardModel:
    if not version.replace("-", "").isalnum():
        raise ModelError(f"not a model version: {version!r}")
    path = directory / f"{version}.json"
    if not path.is_file():
        raise ModelError(f"model {version} not found in {directory}")
    model = ScorecardModel.from_json(path.read_bytes())
    if model.version != version:
        raise ModelError(f"{path.name} holds model {model.version}")
    return model


def load_current(directory: Path = MODELS_DIR) -> ScorecardModel:
    return load_model(current_version(directory), directory)
