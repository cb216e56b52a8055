"""The operator, signer and auditor scripts against a real deployment on the test chain."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from eth_utils import keccak
from web3 import Web3

from offchain.chain.contracts import Deployment
from offchain.chain.deployment import DEFAULT_ADMIN_ROLE, deploy
from offchain.platform.devkeys import anvil_accounts

REPO = Path(__file__).resolve().parents[2]


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def deployed(chain, tmp_path_factory):
    accounts = anvil_accounts()
    out = tmp_path_factory.mktemp("deployments")
    url = chain.provider.http_uri
    deployment = deploy(
        rpc_url=url,
        deployer_key=accounts[0].private_key,
        signers=[a.address for a in accounts[6:9]],
        threshold=2,
        backend_address=accounts[1].address,
        network="test",
        out_dir=out,
    )
    return url, out / "test.json", deployment


def test_deploy__wires_roles_and_writes_file(deployed):
    url, path, deployment = deployed
    written = json.loads(path.read_text())
    assert written == json.loads(json.dumps(deployment))
    assert set(written["contracts"]) == {"LoanBook", "DisbursementCommittee"}
    w3 = Web3(Web3.HTTPProvider(url))
    bound = Deployment.load(path)
    book, committee = bound.loan_book(w3), bound.committee(w3)
    accounts = anvil_accounts()
    role = lambda name: keccak(text=name)  # noqa: E731
    assert book.functions.hasRole(role("APPROVER_ROLE"), bound.committee_address).call()
    assert book.functions.hasRole(role("PAUSER_ROLE"), bound.committee_address).call()
    assert book.functions.hasRole(role("UNPAUSER_ROLE"), bound.committee_address).call()
    assert book.functions.hasRole(DEFAULT_ADMIN_ROLE, bound.committee_address).call()
    assert book.functions.hasRole(role("ORIGINATOR_ROLE"), accounts[1].address).call()
    assert book.functions.hasRole(role("SERVICER_ROLE"), accounts[1].address).call()
    assert not book.functions.hasRole(DEFAULT_ADMIN_ROLE, accounts[0].address).call()
    assert committee.functions.threshold().call() == 2
    assert written["chain_id"] == w3.eth.chain_id
    assert written["contracts"]["LoanBook"]["block"] <= written["contracts"]["DisbursementCommittee"]["block"]


def _send(w3, key, fn):
    from eth_account import Account

    account = Account.from_key(key)
    tx = fn.build_transaction({"from": account.address})
    tx["nonce"] = w3.eth.get_transaction_count(account.address, "pending")
    receipt = w3.eth.wait_for_transaction_receipt(
        w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
    )
    assert receipt["status"] == 1
    return receipt


def test_sign_and_audit_scripts__approve_then_audit(deployed, monkeypatch):
    url, path, _ = deployed
    w3 = Web3(Web3.HTTPProvider(url))
    bound = Deployment.load(path)
    book = bound.loan_book(w3)
    accounts = anvil_accounts()
    loan_id = keccak(text="scripts:loan")
    terms = (
        keccak(text="b"),
        keccak(text="p"),
        566,
        50_000_00,
        56_000_00,
        2,
        86_400 * 30,
        0,
        0,
        keccak(text="payout"),
        keccak(text="terms"),
    )
    _send(w3, accounts[1].private_key, book.functions.create_loan(loan_id, terms))

    sign = _load_script("sign_approval")
    runner = CliRunner()
    common = ["0x" + loan_id.hex(), "--deployment", str(path), "--rpc-url", url]
    # first signer approves on chain, second signs offline and submits: 2 of 3
    monkeypatch.setenv("SIGNER_KEY", accounts[6].private_key)
    result = runner.invoke(sign.cli, [*common, "--onchain"])
    assert result.exit_code == 0, result.output
    monkeypatch.setenv("SIGNER_KEY", accounts[7].private_key)
    result = runner.invoke(sign.cli, [*common, "--submit"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output.splitlines()[0])
    assert printed["signer"] == accounts[7].address
    assert book.functions.loan_state(loan_id).call() == 2  # APPROVED

    audit = _load_script("audit_loan")
    result = runner.invoke(audit.cli, ["0x" + loan_id.hex(), "--deployment", str(path), "--rpc-url", url])
    assert result.exit_code == 0, result.output
    assert "COMPLETE" in result.output
    assert "LoanCreated" in result.output and "LoanApproved" in result.output
    assert "APPROVED" in result.output
