"""Paystack's documented sample payloads (tests/offchain/fixtures/paystack/*.json), as tests use them.

Each file is one sample as Paystack's documentation prints it, plus `_source` (the page it is
from) and, where needed, `_note`; keys starting with `_` are ours and are stripped here.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures" / "paystack"
NAMES = sorted(p.stem for p in FIXTURES.glob("*.json"))


def sample(name: str) -> dict[str, Any]:
    """The sample without our `_` keys (a fresh copy: tests may change it)."""
    doc = json.loads((FIXTURES / f"{name}.json").read_text())
    return copy.deepcopy({k: v for k, v in doc.items() if not k.startswith("_")})


def source(name: str) -> str:
    return str(json.loads((FIXTURES / f"{name}.json").read_text())["_source"])


def body(payload: dict[str, Any]) -> bytes:
    """A webhook body as Paystack sends one (compact JSON)."""
    return json.dumps(payload, separators=(",", ":")).encode()
