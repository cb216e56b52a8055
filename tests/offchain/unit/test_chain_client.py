"""An app's ChainClient reads its deployment file once, and again only when it changes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from offchain.chain.artifacts import compile_contract
from offchain.chain.client import ChainClient, ChainNotConfigured
from offchain.platform.settings import ChainSettings


def _write(path: Path, address: str) -> None:
    abi = compile_contract("LoanBook").abi
    contract = {"address": address, "abi": abi, "block": 1}
    path.write_text(
        json.dumps(
            {"chain_id": 31337, "contracts": {"LoanBook": contract, "DisbursementCommittee": contract}}
        )
    )


def test_deployment__loaded_once__reloaded_when_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "local.json"
    _write(path, "0x" + "42" * 20)
    chain = ChainClient(ChainSettings(deployment_file=path))
    first = chain.deployment
    assert chain.deployment is first  # no second read
    assert first.loan_book_contract is first.loan_book_contract  # the binding is built once too
    _write(path, "0x" + "43" * 20)  # a redeploy of the dev stack rewrites the file
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert chain.deployment is not first
    assert chain.deployment.loan_book_address == "0x" + "43" * 20


def test_not_configured__says_which_setting() -> None:
    chain = ChainClient(ChainSettings(deployment_file=None, rpc_url=None))
    with pytest.raises(ChainNotConfigured, match="DEPLOYMENT_FILE"):
        _ = chain.deployment
    with pytest.raises(ChainNotConfigured, match="CHAIN_RPC_URL"):
        _ = chain.rpc
