"""Pure pieces of the sender: revert decoding, fee bumps, lock keys, intent normalization."""

from __future__ import annotations

import pytest
from eth_abi import encode

from offchain.chain.jsonrpc import RpcError, decode_revert
from offchain.chain.sender import advisory_lock_key, bumped, normalize_address, normalize_data


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
