"""Anvil's well-known development accounts, derived rather than pasted.

Foundry's Anvil funds the first accounts of a public test mnemonic. Everybody knows these keys,
so they are fine on a local chain and must never reach production: settings refuse them outside
development/test, and `caas up` hands them out as the dev deployer, sender and committee signers.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

# Public and documented by Foundry (anvil --help); derived from, never stored as, private keys.
ANVIL_MNEMONIC = "test test test test test test test test test test test junk"
ANVIL_ACCOUNT_COUNT = 10


@dataclass(frozen=True)
class DevAccount:
    index: int
    address: str
    private_key: str  # 0x-prefixed lowercase hex


@cache
def anvil_accounts(count: int = ANVIL_ACCOUNT_COUNT) -> tuple[DevAccount, ...]:
    """The first `count` accounts Anvil funds (BIP-44 path m/44'/60'/0'/0/i)."""
    # Imported here: eth_account is only needed by dev tooling and the production secret check.
    from eth_account import Account
    from eth_account.hdaccount import key_from_seed, seed_from_mnemonic

    seed = seed_from_mnemonic(ANVIL_MNEMONIC, "")
    accounts = []
    for index in range(count):
        key = key_from_seed(seed, f"m/44'/60'/0'/0/{index}")
        accounts.append(
            DevAccount(index=index, address=Account.from_key(key).address, private_key="0x" + key.hex())
        )
    return tuple(accounts)


def is_anvil_key(value: str) -> bool:
    normalized = value.strip().lower()
    if not normalized.startswith("0x"):
        normalized = "0x" + normalized
    return any(account.private_key == normalized for account in anvil_accounts())


@dataclass(frozen=True)
class DevRoles:
    """Which Anvil account plays which part in the local stack."""

    deployer: DevAccount
    sender: DevAccount  # the backend's sending key: ORIGINATOR_ROLE and SERVICER_ROLE
    signers: tuple[DevAccount, ...]  # DisbursementCommittee members
    threshold: int


def dev_roles() -> DevRoles:
    accounts = anvil_accounts()
    return DevRoles(deployer=accounts[0], sender=accounts[1], signers=accounts[2:5], threshold=2)
