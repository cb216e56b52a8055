"""Pure pieces of the sender: revert decoding, fee bumps, lock keys, intent normalization."""

from __future__ import annotations

import coincurve
import pytest
from eth_abi import encode
from eth_account import Account
from eth_utils import to_checksum_address

from offchain.chain.jsonrpc import RpcError, decode_revert
from offchain.chain.sender.intents import normalize_address, normalize_data
from offchain.chain.sender.signing import bumped, sign_eip1559
from offchain.chain.sender.worker import advisory_lock_key


def test_decode_revert__error_string() -> None:
    data = "0x08c379a0" + encode(["string"], ["loan_book: amount exceeds outstanding"]).hex()
    assert decode_revert(data) == "loan_book: amount exceeds outstanding"


def test_decode_revert__panic_and_unknown_and_empty() -> None:
    assert decode_revert("0x4e487b71" + encode(["uint256"], [0x11]).hex()) == "panic: 0x11"
    assert decode_revert("0xdeadbeef") == "0xdeadbeef"
    assert decode_revert("0x") is None
    assert decode_revert(None) is None


def test_rpc_error__reason_from_data_then_message() -> None:
    data = "0x08c379a0" + encode(["string"], ["loan_book: not repayable"]).hex()
    assert RpcError(3, "execution reverted", data).revert_reason() == "loan_book: not repayable"
    assert RpcError(-32003, "execution reverted: loan_book: loan exists").revert_reason() == (
        "loan_book: loan exists"
    )
    assert RpcError(3, "execution reverted").is_revert
    assert not RpcError(-32000, "insufficient funds for gas * price + value").is_revert


def test_bumped__at_least_the_rate_and_one_wei() -> None:
    assert bumped(1_000_000_000, 1_250) == 1_125_000_000
    assert bumped(7, 1_250) == 8  # rounded up
    assert bumped(0, 1_250) == 1
    assert bumped(3, 1_000) == 4


def test_advisory_lock_key__per_chain_and_address_case_insensitive() -> None:
    address = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
    key = advisory_lock_key(31337, address)
    assert key == advisory_lock_key(31337, address.lower())
    assert key != advisory_lock_key(1, address)
    assert -(2**63) <= key < 2**63


def test_normalize__lowercase_and_validated() -> None:
    assert normalize_address("0x70997970C51812dc3A010C7d01b50e0d17dc79C8") == (
        "0x70997970c51812dc3a010c7d01b50e0d17dc79c8"
    )
    assert normalize_data(b"\x01\xab") == "0x01ab"
    assert normalize_data("0xABcd") == "0xabcd"
    for bad in ("abcd", "0xabc", "0xzz"):
        with pytest.raises(ValueError):
            normalize_data(bad)
    with pytest.raises(ValueError):
        normalize_address("0x1234")


@pytest.mark.parametrize(
    ("nonce", "data", "value", "gas", "max_fee", "tip"),
    [
        (0, "0x", 0, 21_000, 1, 0),
        (7, "0x" + "ab" * 100, 0, 123_456, 2_000_000_000, 1_000_000_000),
        (2**20, "0x00ff", 10**18, 30_000_000, 500 * 10**9, 500 * 10**9),
    ],
)
def test_sign_eip1559__the_bytes_and_hash_eth_account_signs(
    nonce: int, data: str, value: int, gas: int, max_fee: int, tip: int
) -> None:
    key = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
    to = "0x5fbdb2315678afecb367f032d93f642f64180aa3"
    expected = Account.from_key(key).sign_transaction(
        {
            "type": 2,
            "chainId": 31337,
            "nonce": nonce,
            "to": to_checksum_address(to),
            "data": data,
            "value": value,
            "gas": gas,
            "maxFeePerGas": max_fee,
            "maxPriorityFeePerGas": tip,
        }
    )
    raw, tx_hash = sign_eip1559(
        coincurve.PrivateKey(bytes.fromhex(key[2:])),
        chain_id=31337,
        nonce=nonce,
        to=to,
        data=data,
        value=value,
        gas=gas,
        max_fee=max_fee,
        tip=tip,
    )
    assert raw == bytes(expected.raw_transaction)
    assert tx_hash == bytes(expected.hash)
    assert Account.recover_transaction(raw) == to_checksum_address(Account.from_key(key).address)
