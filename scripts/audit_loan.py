"""Auditor's script: a loan's state read straight from the chain, its event chain recomputed.

    .venv/bin/python scripts/audit_loan.py 0x<chain loan id> [--deployment FILE] [--rpc-url URL]

The deployment file defaults to DEPLOYMENT_FILE (then `.caas/dev.env`, then the checkout's
deployments/local.json), the node to CHAIN_RPC_URL. `event_chain` starts from 32 zero bytes and
folds every LoanBook log whose topic_1 is the loan id (the ten loan events), in emission order:
chain_n = keccak256(chain_{n-1} ++ topics ++ data). Exits 0 when the logs recompute the on-chain
`event_chain` (the event history is complete), 1 otherwise; errors are one line, no traceback.
`caas audit <loan>` does the same and also compares the backend's copy.
"""

from __future__ import annotations

import sys

import click

from offchain.cli_sign import _deployment, _load_dev_env, _web3


def _fmt(value):
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return value


@click.command()
@click.argument("loan_id")
@click.option("--deployment", "deployment_path", default=None, help="default DEPLOYMENT_FILE")
@click.option("--rpc-url", default=None, help="default CHAIN_RPC_URL, then http://127.0.0.1:8545")
def cli(loan_id: str, deployment_path: str | None, rpc_url: str | None) -> None:
    from offchain.chain.audit import audit_loan

    _load_dev_env()
    try:
        chain_loan_id = bytes.fromhex(loan_id.removeprefix("0x"))
    except ValueError as error:
        raise click.UsageError(f"not a 0x chain loan id: {loan_id!r}") from error
    deployment = _deployment(deployment_path)
    try:
        audit = audit_loan(_web3(rpc_url).provider.endpoint_uri, deployment, chain_loan_id)
    except Exception as error:  # a node that does not answer: one line, no traceback
        raise click.ClickException(f"{type(error).__name__}: {error}") from error
    click.echo(f"loan {loan_id}")
    for key, value in audit.state.items():
        click.echo(f"  {key:20} {_fmt(value)}")
    click.echo(f"events ({len(audit.events)}):")
    for event in audit.events:
        args = ", ".join(f"{k}={_fmt(v)}" for k, v in event["args"].items() if k != "loan_id")
        click.echo(f"  block {event['block']:>6}  {event['event']:18} {args}")
    click.echo(f"event_chain on chain   0x{audit.onchain_event_chain.hex()}")
    click.echo(f"event_chain recomputed 0x{audit.recomputed_event_chain.hex()}")
    click.echo(
        "COMPLETE: the logs account for every event" if audit.complete else "MISMATCH: logs incomplete"
    )
    sys.exit(0 if audit.complete else 1)


if __name__ == "__main__":
    cli()
