"""Signer's script: approve a loan's disbursement offline with EIP-712, and optionally submit it.

    # sign with a key from the environment, print the signature for POST /v1/loans/{id}/approvals
    SIGNER_KEY=0x... python scripts/sign_approval.py 0x<chain loan id>
    # sign with an ape account (prompts for its passphrase) and submit approve_with_signatures
    python scripts/sign_approval.py 0x<chain loan id> --ape-account treasury-signer --submit
    # or approve on chain from the signer's own account
    SIGNER_KEY=0x... python scripts/sign_approval.py 0x<chain loan id> --onchain

The document signed binds the live chain id, the committee contract, the loan's terms hash,
principal and payout reference, the committee epoch and a deadline.
"""

from __future__ import annotations

import json
import os
import time

import click
from eth_account import Account
from eth_account.messages import encode_typed_data
from web3 import Web3

from offchain.chain.contracts import Deployment, approval_request, sign_approval


def _sign_with_ape(alias: str, typed: dict) -> tuple[str, bytes]:
    from ape import accounts  # imported lazily: ape is heavy and only this path needs it

    account = accounts.load(alias)
    signature = account.sign_message(encode_typed_data(full_message=typed))
    return account.address, bytes(signature.encode_rsv())


def _send(w3: Web3, key: str, fn) -> str:
    account = Account.from_key(key)
    tx = fn.build_transaction({"from": account.address})
    tx["nonce"] = w3.eth.get_transaction_count(account.address, "pending")
    tx_hash = w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=120)
    if receipt["status"] != 1:
        raise click.ClickException(f"transaction {tx_hash.hex()} reverted")
    return "0x" + tx_hash.hex().removeprefix("0x")


def _echo_progress(w3: Web3, deployment: Deployment, loan: bytes) -> None:
    state = deployment.loan_book(w3).functions.loan_state(loan).call()
    click.echo("loan APPROVED" if state == 2 else f"loan state {state}: waiting for more approvals")


@click.command()
@click.argument("loan_id")
@click.option("--deployment", "deployment_path", default="deployments/local.json", show_default=True)
@click.option("--rpc-url", envvar="CHAIN_RPC_URL", default="http://127.0.0.1:8545", show_default=True)
@click.option("--key-env", default="SIGNER_KEY", show_default=True, help="env var with the signer's key")
@click.option("--ape-account", default=None, help="sign with this ape account alias instead")
@click.option("--valid-for", default=3600, show_default=True, help="seconds until the signature expires")
@click.option("--submit", is_flag=True, help="submit approve_with_signatures with this signature")
@click.option("--onchain", is_flag=True, help="call committee.approve from the signer's account")
@click.option("--payer-key-env", default=None, help="env var with the key paying for --submit")
def cli(loan_id, deployment_path, rpc_url, key_env, ape_account, valid_for, submit, onchain, payer_key_env):
    w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 30}))
    deployment = Deployment.load(deployment_path)
    loan = bytes.fromhex(loan_id.removeprefix("0x"))
    key = os.environ.get(key_env)
    committee = deployment.committee(w3)

    if onchain:
        if not key:
            raise click.UsageError(f"--onchain needs {key_env}")
        click.echo(f"approve tx {_send(w3, key, committee.functions.approve(loan))}")
        _echo_progress(w3, deployment, loan)
        return

    deadline = int(time.time()) + valid_for
    typed = approval_request(w3, deployment, loan, deadline)
    if ape_account:
        signer, signature = _sign_with_ape(ape_account, typed)
    elif key:
        signer, signature = sign_approval(typed, key)
    else:
        raise click.UsageError(f"set {key_env} or pass --ape-account")
    click.echo(json.dumps({"signer": signer, "signature": "0x" + signature.hex(), "deadline": deadline}))

    if submit:
        payer = os.environ.get(payer_key_env) if payer_key_env else key
        if not payer:
            raise click.UsageError("--submit needs a paying key (--payer-key-env, or the signer's key)")
        tx = _send(w3, payer, committee.functions.approve_with_signatures(loan, deadline, [signature]))
        click.echo(f"approve_with_signatures tx {tx}")
        _echo_progress(w3, deployment, loan)


if __name__ == "__main__":
    cli()
