"""Signer's script: approve a loan's disbursement with EIP-712 (the same command as `caas sign`).

    SIGNER_KEY=0x... .venv/bin/python scripts/sign_approval.py <loan uuid>            # prints the POST body
    SIGNER_KEY=0x... .venv/bin/python scripts/sign_approval.py <loan uuid> --post     # and posts it
    SIGNER_KEY=0x... .venv/bin/python scripts/sign_approval.py 0x<chain loan id> --deadline <unix>
    SIGNER_KEY=0x... .venv/bin/python scripts/sign_approval.py 0x<chain loan id> --onchain
    .venv/bin/python scripts/sign_approval.py 0x<chain loan id> --ape-account treasury-signer --submit

See offchain/cli_sign.py (or `caas sign --help`) for the options and the settings it reads
(`DEPLOYMENT_FILE`, `CHAIN_RPC_URL`, `GATEWAY_URL`, `CAAS_TOKEN`, then `.caas/dev.env`).
"""

from __future__ import annotations

from offchain.cli_sign import sign as cli

__all__ = ["cli"]

if __name__ == "__main__":
    cli()
