"""Compile the project's Vyper contracts into (abi, bytecode), for deployment.

The backend itself never compiles: it reads ABIs from `deployments/<network>.json`.
Compilation goes through the pinned `vyper` in this environment, with snekmate on the search path,
exactly as `ape compile` does.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTRACTS_DIR = REPO_ROOT / "contracts"
EVM_VERSION = "cancun"


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: list[dict]
    bytecode: str


def _vyper_executable() -> str:
    beside_python = Path(sys.executable).with_name("vyper")
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("vyper")
    if found is None:
        raise RuntimeError("vyper is not installed in this environment (make setup)")
    return found


def _site_packages_with_snekmate() -> Path:
    import snekmate  # a namespace package of .vy files: locate it by its search path

    return Path(next(iter(snekmate.__path__))).resolve().parent


@cache
def compile_contract(name: str) -> Artifact:
    source = CONTRACTS_DIR / f"{name}.vy"
    search_path = _site_packages_with_snekmate()
    result = subprocess.run(  # noqa: S603 - fixed executable and arguments
        [
            _vyper_executable(),
            "-p",
            str(search_path),
            "-p",
            str(CONTRACTS_DIR),
            "--evm-version",
            EVM_VERSION,
            "-f",
            "abi,bytecode",
            str(source),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if result.returncode != 0:
        raise RuntimeError(f"vyper failed on {source}:\n{result.stderr}")
    abi_line, bytecode_line = result.stdout.strip().splitlines()[:2]
    return Artifact(name=name, abi=json.loads(abi_line), bytecode=bytecode_line.strip())
