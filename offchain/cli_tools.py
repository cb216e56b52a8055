"""`caas token`, `caas audit`, `caas deploy`, `caas sign`: operator, auditor and signer commands beside the
server ones."""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path

import click

from offchain.platform.auth import ALL_PERMISSIONS, issue_token

DEV_ENV = Path(".caas/dev.env")


def _dev_env() -> None:
    """Commands run beside `caas up` pick up its settings; explicit environment wins."""
    from offchain.stack.devstack import load_env_file_defaults

    load_env_file_defaults(DEV_ENV)


@click.command()
@click.option("--partner-id", default=None, help="partner UUID (default: the dev partner of `caas up`)")
@click.option("--permission", "permissions", multiple=True, help="repeat; default: every credit permission")
@click.option("--credit-limit", type=int, default=None, help="creditLimit claim, minor units")
@click.option("--risk-rating", default=None)
@click.option("--operator", is_flag=True, help="an operator token (caasPermissions, no partner_id)")
@click.option(
    "--service", default=None, help="a service token of this CaaS service (signed with SERVICE_KEY)"
)
@click.option(
    "--to", "audience", multiple=True, help="--service: the service(s) it is for; default every one"
)
@click.option("--subject", default=None, help="sub claim (partner user or operator)")
@click.option("--ttl", default=None, type=int, help="seconds [partner 30 days, operator 8 h, service 300]")
def token(
    partner_id, permissions, credit_limit, risk_rating, operator, service, audience, subject, ttl
) -> None:
    """Print a dev JWT: a partner's (default), an operator's (--operator), or a service's
    (--service NAME). Partner and operator tokens are signed with JWT_SECRET as the SME auth
    service would sign them; service tokens with SERVICE_KEY (see docs/SECURITY.md)."""
    from offchain.platform.auth import OPERATOR_PERMISSIONS, issue_operator_token
    from offchain.platform.service_auth import issue_service_token
    from offchain.platform.settings import Settings
    from offchain.services.registry import SERVICES
    from offchain.stack.devstack import DEV_PARTNER_ID

    _dev_env()
    settings = Settings()
    if operator and service:
        raise click.UsageError("--operator and --service exclude each other")
    if service is not None:
        if service not in SERVICES:
            raise click.BadParameter(f"one of: {', '.join(SERVICES)}", param_hint="--service")
        unknown = [name for name in audience if name not in SERVICES]
        if unknown:
            raise click.BadParameter(f"unknown service {unknown[0]}", param_hint="--to")
        key = settings.internal.service_key
        if key is None:
            raise click.ClickException("SERVICE_KEY is not set (caas up writes it to .caas/dev.env)")
        lifetime = ttl or settings.internal.max_token_ttl_s
        if lifetime > settings.internal.max_token_ttl_s:
            raise click.BadParameter(
                f"services accept at most {settings.internal.max_token_ttl_s} s", param_hint="--ttl"
            )
        targets = list(audience) or list(SERVICES)
        click.echo(
            issue_service_token(
                key.get_secret_value(),
                caller=service,
                audience=targets[0] if len(targets) == 1 else targets,
                ttl_s=lifetime,
            )
        )
        return
    secret = settings.auth.jwt_secret.get_secret_value()
    if operator:
        click.echo(
            issue_operator_token(
                secret,
                subject=subject or "dev-operator",
                permissions=tuple(permissions) or OPERATOR_PERMISSIONS,
                ttl_s=ttl or 8 * 3600,
            )
        )
        return
    click.echo(
        issue_token(
            secret,
            partner_id=uuid.UUID(partner_id or DEV_PARTNER_ID),
            subject=subject or "dev-partner-user",
            permissions=tuple(permissions) or ALL_PERMISSIONS,
            credit_limit=credit_limit,
            risk_rating=risk_rating,
            ttl_s=ttl or 30 * 86_400,
        )
    )


@click.command()
@click.argument("loan")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def audit(loan: str, as_json: bool) -> None:
    """A loan's state read straight from the chain, its event chain recomputed from the logs,
    and the backend's copy compared. LOAN is the chain loan id (0x...) or the backend loan UUID."""
    from offchain.platform.settings import Settings
    from offchain.services.gateway.audit import audit_report_sync

    _dev_env()
    report = audit_report_sync(Settings(), loan)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        click.echo(f"loan {report['chain_loan_id']} ({report.get('loan_id') or 'not in the backend'})")
        for key, value in report["onchain"].items():
            click.echo(f"  {key:22} {value}")
        chain = report["event_chain"]
        click.echo(f"events on chain: {report['event_count']}")
        click.echo(f"event_chain on chain        {chain['onchain']}")
        click.echo(f"event_chain from logs       {chain['recomputed_from_logs']}")
        click.echo(f"event_chain backend copy    {chain['backend']}")
        for mismatch in report["mismatches"]:
            click.echo(
                f"MISMATCH {mismatch['field']}: chain={mismatch['onchain']} backend={mismatch['backend']}"
            )
        click.echo("OK: chain, logs and backend agree" if report["consistent"] else "NOT CONSISTENT")
    sys.exit(0 if report["consistent"] else 1)


@click.command()
@click.option("--network", default="local", show_default=True)
@click.option("--threshold", type=int, default=2, show_default=True)
@click.option(
    "--if-missing",
    is_flag=True,
    help="Do nothing when DEPLOYMENT_FILE already names live contracts on this chain (compose re-runs).",
)
def deploy(network: str, threshold: int, if_missing: bool) -> None:
    """Deploy and wire the contracts to CHAIN_RPC_URL (keys from DEPLOYER_KEY / settings)."""
    from offchain.chain.deployment import deploy as deploy_contracts
    from offchain.platform.devkeys import dev_roles
    from offchain.platform.settings import Settings
    from offchain.stack.devstack import deployment_is_live

    _dev_env()
    settings = Settings()
    existing = settings.chain.deployment_file
    rpc_url = settings.chain.rpc_url or "http://127.0.0.1:8545"
    if if_missing and existing and deployment_is_live(rpc_url, Path(existing)):
        click.echo(f"contracts of {existing} are live: nothing to deploy")
        return
    roles = dev_roles()
    deployer_key = os.environ.get("DEPLOYER_KEY") or roles.deployer.private_key
    sender = settings.chain.sender_private_key
    from eth_account import Account

    backend = Account.from_key(sender.get_secret_value()).address if sender else roles.sender.address
    signers = [Account.from_key(k.get_secret_value()).address for k in settings.chain.signer_keys] or [
        s.address for s in roles.signers
    ]
    out = (
        Path(settings.chain.deployment_file).parent if settings.chain.deployment_file else Path("deployments")
    )
    result = deploy_contracts(
        rpc_url=rpc_url,
        deployer_key=deployer_key,
        signers=signers,
        threshold=threshold,
        backend_address=backend,
        network=network,
        out_dir=out,
    )
    for name, info in result["contracts"].items():
        click.echo(f"{name}: {info['address']} (block {info['block']})")


def _sign_command() -> click.Command:
    from offchain.cli_sign import sign

    return sign


COMMANDS = (token, audit, deploy, _sign_command())
