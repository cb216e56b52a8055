"""`caas sign` (also `scripts/sign_approval.py`): a committee signer's approval of a disbursement.

    # sign what the gateway serves and print the body of POST /v1/loans/{id}/approvals
    SIGNER_KEY=0x... caas sign <loan uuid>                 # GATEWAY_URL, CAAS_TOKEN (or --token)
    SIGNER_KEY=0x... caas sign <loan uuid> --post          # ... and post it
    # offline, from the chain: the loan's deadline comes from approval-request's `deadline`
    SIGNER_KEY=0x... caas sign 0x<chain loan id> --deadline 1767225600
    # approve on chain from the signer's own account, or relay one's own signature
    SIGNER_KEY=0x... caas sign 0x<chain loan id> --onchain
    caas sign 0x<chain loan id> --ape-account treasury-signer --submit

With a loan UUID the typed data is exactly the gateway's (`typed_data` of approval-request),
deadline included, so the printed JSON is accepted by POST as printed. With a 0x chain loan id it
is built from the chain (LoanBook.approval_terms, the committee's epoch): every economic term of
the loan, the epoch and the deadline. Settings come from the environment (`DEPLOYMENT_FILE`,
`CHAIN_RPC_URL`, `GATEWAY_URL`), then from `.caas/dev.env` of the working directory or of the
checkout. Errors are one line on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import click

REPO_ROOT = Path(__file__).resolve().parents[1]


def _load_dev_env() -> None:
    from offchain.stack.devstack import load_env_file_defaults

    for directory in (Path.cwd(), REPO_ROOT):
        load_env_file_defaults(directory / ".caas" / "dev.env")


def _deployment(path: str | None) -> Any:
    from offchain.chain.contracts import Deployment

    chosen = Path(path or os.environ.get("DEPLOYMENT_FILE") or REPO_ROOT / "deployments" / "local.json")
    if not chosen.is_file():
        raise click.ClickException(
            f"deployment file {chosen} not found: set DEPLOYMENT_FILE or pass --deployment "
            "(`caas up` writes it and names it in .caas/dev.env)"
        )
    try:
        return Deployment.load(chosen)
    except (ValueError, KeyError) as error:
        raise click.ClickException(f"deployment file {chosen} is not a deployment: {error}") from error


def _web3(rpc_url: str | None) -> Any:
    from web3 import Web3

    url = rpc_url or os.environ.get("CHAIN_RPC_URL") or "http://127.0.0.1:8545"
    return Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 30}))


def _sign(typed: dict[str, Any], key_env: str, ape_account: str | None) -> tuple[str, bytes]:
    from eth_account.messages import encode_typed_data

    from offchain.chain.contracts import sign_approval

    if ape_account:
        from ape import accounts  # lazily: ape is heavy and only this path needs it

        account = accounts.load(ape_account)
        signature = account.sign_message(encode_typed_data(full_message=typed))
        return str(account.address), bytes(signature.encode_rsv())
    key = os.environ.get(key_env)
    if not key:
        raise click.UsageError(f"set {key_env} to the signer's private key, or pass --ape-account")
    try:
        return sign_approval(typed, key)
    except ValueError as error:
        raise click.ClickException(f"{key_env} is not a private key: {error}") from error


def _send(w3: Any, key: str, fn: Any) -> str:
    from eth_account import Account

    account = Account.from_key(key)
    tx = fn.build_transaction({"from": account.address})
    tx["nonce"] = w3.eth.get_transaction_count(account.address, "pending")
    tx_hash = w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=120)
    if receipt["status"] != 1:
        raise click.ClickException(f"transaction {tx_hash.hex()} reverted")
    return "0x" + tx_hash.hex().removeprefix("0x")


class _Gateway:
    def __init__(self, url: str | None, token: str | None) -> None:
        self.url = (url or os.environ.get("GATEWAY_URL") or "http://127.0.0.1:8000").rstrip("/")
        self.token = token or os.environ.get("CAAS_TOKEN") or os.environ.get("DEMO_PARTNER_TOKEN")
        if not self.token:
            raise click.UsageError("a partner token is needed: --token, CAAS_TOKEN or DEMO_PARTNER_TOKEN")

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        import httpx

        try:
            response = httpx.request(
                method,
                f"{self.url}{path}",
                json=body,
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=30,
            )
        except httpx.HTTPError as error:
            raise click.ClickException(f"gateway {self.url} did not answer: {error}") from error
        if response.status_code >= 400:
            try:
                problem = response.json()
                detail = problem.get("detail") or problem.get("title")
                errors = problem.get("errors")
            except ValueError:
                detail, errors = response.text[:300], None
            raise click.ClickException(
                f"{method} {path}: {response.status_code} {detail}{f' {errors}' if errors else ''}"
            )
        return dict(response.json())


@click.command(name="sign")
@click.argument("loan")
@click.option("--deadline", type=int, default=None, help="the loan's approval deadline (chain loan id only)")
@click.option("--gateway-url", default=None, help="default GATEWAY_URL, then http://127.0.0.1:8000")
@click.option("--token", default=None, help="partner token (default CAAS_TOKEN, then DEMO_PARTNER_TOKEN)")
@click.option("--post", "post_it", is_flag=True, help="POST the approval to the gateway (loan UUID)")
@click.option("--deployment", "deployment_path", default=None, help="default DEPLOYMENT_FILE")
@click.option("--rpc-url", default=None, help="default CHAIN_RPC_URL, then http://127.0.0.1:8545")
@click.option("--key-env", default="SIGNER_KEY", show_default=True, help="env var with the signer's key")
@click.option("--ape-account", default=None, help="sign with this ape account alias instead")
@click.option(
    "--submit", is_flag=True, help="relay approve_with_signatures with this signature (chain loan id)"
)
@click.option("--valid-for", default=3600, show_default=True, help="with --submit and no --deadline: seconds")
@click.option("--onchain", is_flag=True, help="call committee.approve from the signer's account")
@click.option("--payer-key-env", default=None, help="env var with the key paying for --submit")
def sign(
    loan: str,
    deadline: int | None,
    gateway_url: str | None,
    token: str | None,
    post_it: bool,
    deployment_path: str | None,
    rpc_url: str | None,
    key_env: str,
    ape_account: str | None,
    submit: bool,
    valid_for: int,
    onchain: bool,
    payer_key_env: str | None,
) -> None:
    """Sign a committee approval of LOAN: the backend loan UUID (typed data from the gateway's
    approval-request) or its 0x chain loan id (typed data from the chain)."""
    _load_dev_env()
    try:
        backend_id: uuid.UUID | None = uuid.UUID(loan)
    except ValueError:
        backend_id = None
    if backend_id is not None:
        if submit or onchain:
            raise click.UsageError("--submit and --onchain take the 0x chain loan id")
        gateway = _Gateway(gateway_url, token)
        request = gateway.call("GET", f"/v1/loans/{backend_id}/approval-request")
        typed = request["typed_data"]
        signer, signature = _sign(typed, key_env, ape_account)
        body = {
            "signer": signer,
            "signature": "0x" + signature.hex(),
            "deadline": typed["message"]["deadline"],
        }
        click.echo(json.dumps(body))
        if post_it:
            answer = gateway.call("POST", f"/v1/loans/{backend_id}/approvals", body)
            click.echo(json.dumps(answer))
        return

    if post_it:
        raise click.UsageError("--post takes the loan UUID (the gateway's id)")
    try:
        chain_loan_id = bytes.fromhex(loan.removeprefix("0x"))
    except ValueError as error:
        raise click.UsageError(f"LOAN is neither a UUID nor 0x hex: {loan!r}") from error
    if len(chain_loan_id) != 32:
        raise click.UsageError("a chain loan id is 32 bytes (0x + 64 hex digits)")
    deployment = _deployment(deployment_path)
    w3 = _web3(rpc_url)
    try:
        _chain_mode(
            w3,
            deployment,
            chain_loan_id,
            deadline,
            key_env,
            ape_account,
            submit,
            valid_for,
            onchain,
            payer_key_env,
        )
    except (click.ClickException, click.UsageError):
        raise
    except Exception as error:  # a node that does not answer, a revert: one line, no traceback
        raise click.ClickException(f"{type(error).__name__}: {error}") from error


def _chain_mode(
    w3: Any,
    deployment: Any,
    chain_loan_id: bytes,
    deadline: int | None,
    key_env: str,
    ape_account: str | None,
    submit: bool,
    valid_for: int,
    onchain: bool,
    payer_key_env: str | None,
) -> None:
    from offchain.chain.contracts import approval_request

    committee = deployment.committee(w3)
    if onchain:
        key = os.environ.get(key_env)
        if not key:
            raise click.UsageError(f"--onchain needs {key_env}")
        click.echo(f"approve tx {_send(w3, key, committee.functions.approve(chain_loan_id))}")
        _echo_progress(w3, deployment, chain_loan_id)
        return
    if deadline is None:
        if not submit:
            raise click.UsageError(
                "pass --deadline (the `deadline` of GET /v1/loans/{id}/approval-request: the gateway fixes "
                "one per loan), or give the loan's UUID to sign what the gateway serves"
            )
        deadline = int(time.time()) + valid_for
    try:
        typed = approval_request(w3, deployment, chain_loan_id, deadline)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    signer, signature = _sign(typed, key_env, ape_account)
    click.echo(json.dumps({"signer": signer, "signature": "0x" + signature.hex(), "deadline": deadline}))
    if submit:
        payer = os.environ.get(payer_key_env) if payer_key_env else os.environ.get(key_env)
        if not payer:
            raise click.UsageError("--submit needs a paying key (--payer-key-env, or the signer's key)")
        fn = committee.functions.approve_with_signatures(chain_loan_id, deadline, [signature])
        click.echo(f"approve_with_signatures tx {_send(w3, payer, fn)}")
        _echo_progress(w3, deployment, chain_loan_id)


def _echo_progress(w3: Any, deployment: Any, chain_loan_id: bytes) -> None:
    state = deployment.loan_book(w3).functions.loan_state(chain_loan_id).call()
    click.echo("loan APPROVED" if state == 2 else f"loan state {state}: waiting for more approvals")
