"""Signing: the next nonce, the fees of a new or bumped transaction, and its EIP-1559 bytes."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import coincurve
import rlp
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from offchain.platform.settings import SenderSettings


@dataclass(frozen=True)
class SignedTx:
    id: uuid.UUID
    nonce: int
    raw_tx: str
    tx_hash: str


def sign_eip1559(
    key: coincurve.PrivateKey,
    *,
    chain_id: int,
    nonce: int,
    to: str,
    data: str,
    value: int,
    gas: int,
    max_fee: int,
    tip: int,
) -> tuple[bytes, bytes]:
    """(raw transaction, hash) of a type-2 (EIP-1559) call without an access list.

    The same bytes as eth_account's `sign_transaction` (RFC 6979 signatures are deterministic;
    tested), at a fifth of its CPU: its validation and formatters were a quarter of the
    orchestration service's CPU under a burst.
    """
    fields: list[Any] = [
        chain_id,
        nonce,
        tip,
        max_fee,
        gas,
        bytes.fromhex(to.removeprefix("0x")),
        value,
        bytes.fromhex(data.removeprefix("0x")),
        [],
    ]
    signature = key.sign_recoverable(keccak(b"\x02" + rlp.encode(fields)), hasher=None)
    r, s, y_parity = signature[:32], signature[32:64], signature[64]
    raw = b"\x02" + rlp.encode([*fields, y_parity, int.from_bytes(r, "big"), int.from_bytes(s, "big")])
    return raw, keccak(raw)


def bumped(value: int, bps: int) -> int:
    """`value` raised by `bps` basis points, rounded up, and at least by 1 wei."""
    return max(value + 1, -(-value * (10_000 + bps) // 10_000))


def first_nonce(highest_recorded: int | None, pending_nonce: int) -> int:
    """The nonce for the next transaction of a key.

    Our own record wins over the node's pending count (a signed tx may not have reached the node
    yet); the node's wins when someone else used the key.
    """
    return max(-1 if highest_recorded is None else highest_recorded + 1, pending_nonce)


def new_fees(settings: SenderSettings, *, base_fee: int, tip: int) -> tuple[int, int]:
    """(max fee, priority fee) for a new transaction: room for the base fee to double."""
    max_fee = min(settings.max_fee_per_gas_wei, 2 * base_fee + tip)
    return max_fee, min(tip, max_fee)


def bumped_fees(
    settings: SenderSettings, *, max_fee: int, tip: int, base_fee: int, node_tip: int
) -> tuple[int, int] | None:
    """(max fee, priority fee) replacing a stuck transaction's, raised by at least `bump_bps`;
    None when even the smallest bump would pass the configured cap."""
    bps, cap = settings.bump_bps, settings.max_fee_per_gas_wei
    new_tip = max(bumped(tip, bps), node_tip)
    new_max_fee = max(bumped(max_fee, bps), 2 * base_fee + new_tip)
    if new_max_fee > cap:
        if bumped(max_fee, bps) > cap:
            return None
        new_max_fee = cap
    return new_max_fee, min(new_tip, new_max_fee)


class Signer:
    """One sending key on one chain: signs type-2 calls from it."""

    def __init__(self, private_key: str) -> None:
        self.account: LocalAccount = Account.from_key(private_key)
        self.address = self.account.address.lower()
        self._key = coincurve.PrivateKey(bytes(self.account.key))

    def sign(
        self,
        *,
        chain_id: int,
        nonce: int,
        to: str,
        data: str,
        value: int,
        gas: int,
        max_fee: int,
        tip: int,
        intent_id: uuid.UUID,
    ) -> SignedTx:
        raw, tx_hash = sign_eip1559(
            self._key,
            chain_id=chain_id,
            nonce=nonce,
            to=to,
            data=data,
            value=value,
            gas=gas,
            max_fee=max_fee,
            tip=tip,
        )
        return SignedTx(id=intent_id, nonce=nonce, raw_tx="0x" + raw.hex(), tx_hash="0x" + tx_hash.hex())
