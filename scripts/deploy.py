"""Deploy and wire LoanBook + DisbursementCommittee, then write deployments/<network>.json.

Wiring (DESIGN §3): APPROVER_ROLE, PAUSER_ROLE, UNPAUSER_ROLE and DEFAULT_ADMIN_ROLE on the
LoanBook go to the committee; ORIGINATOR_ROLE and SERVICER_ROLE to the backend's sending key;
optionally PAUSER_ROLE (never UNPAUSER_ROLE) to an operations key, so an emergency stop by
operations is undone only by the committee's M-of-N; finally the deployer renounces its admin
role, so from then on only the committee (M-of-N) can change roles.

    python scripts/deploy.py --rpc-url http://127.0.0.1:8545 --network local \\
        --deployer-key-env DEPLOYER_KEY --signer 0x.. --signer 0x.. --signer 0x.. \\
        --threshold 2 --backend 0x..

Keys come from the environment (never from the command line or code).
"""

from __future__ import annotations

import os

import click

from offchain.chain.deployment import deploy

__all__ = ["cli", "deploy"]


@click.command()
@click.option("--rpc-url", default="http://127.0.0.1:8545", show_default=True)
@click.option("--network", default="local", show_default=True)
@click.option("--deployer-key-env", default="DEPLOYER_KEY", show_default=True, help="env var holding the key")
@click.option("--signer", "signers", multiple=True, required=True, help="committee signer address")
@click.option("--threshold", type=int, required=True)
@click.option("--backend", "backend_address", required=True, help="the backend's sending address")
@click.option("--default-after-days", type=int, default=90, show_default=True)
@click.option(
    "--operations-pauser",
    default=None,
    help="optional extra PAUSER_ROLE holder (it can pause, never unpause)",
)
def cli(
    rpc_url,
    network,
    deployer_key_env,
    signers,
    threshold,
    backend_address,
    default_after_days,
    operations_pauser,
):
    key = os.environ.get(deployer_key_env)
    if not key:
        raise click.UsageError(f"set {deployer_key_env} to the deployer's private key")
    deployment = deploy(
        rpc_url=rpc_url,
        deployer_key=key,
        signers=list(signers),
        threshold=threshold,
        backend_address=backend_address,
        network=network,
        default_after_days=default_after_days,
        operations_pauser=operations_pauser,
    )
    for name, info in deployment["contracts"].items():
        click.echo(f"{name}: {info['address']} (block {info['block']})")
    click.echo(f"wrote deployments/{network}.json")


if __name__ == "__main__":
    cli()
