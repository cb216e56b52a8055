"""Auditor's script: a loan's state read straight from the chain, its event chain recomputed.

    python scripts/audit_loan.py 0x<chain loan id> [--deployment deployments/local.json] [--rpc-url ...]

Exits 0 when the logs recompute the on-chain `event_chain` (the event history is complete), 1 otherwise.
"""

from __future__ import annotations

import sys

import click
from web3 import Web3

from offchain.chain.audit import audit_loan
from offchain.chain.contracts import Deployment


def _fmt(value):
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return value


@click.command()
@click.argument("loan_id")
@click.option("--deployment", "deployment_path", default="deployments/local.json", show_default=True)
@click.option("--rpc-url", envvar="CHAIN_RPC_URL", default="http://127.0.0.1:8545", show_default=True)
def cli(loan_id: str, deployment_path: str, rpc_url: str) -> None:
    w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 30}))
    audit = audit_loan(w3, Deployment.load(deployment_path), bytes.fromhex(loan_id.removeprefix("0x")))
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
