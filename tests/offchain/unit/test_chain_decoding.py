"""The indexer's log decoder agrees with web3's reference decoder on every event of both
contracts, for any argument values; and unknown logs are kept, not dropped."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
from eth_abi import encode
from eth_utils import event_abi_to_log_topic, to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st
from web3 import Web3
from web3._utils.events import get_event_data

from offchain.chain.artifacts import compile_contract
from offchain.chain.contracts import Deployment
from offchain.chain.decoding import UNKNOWN_EVENT, LogDecoder

BOOK = "0x5fbdb2315678afecb367f032d93f642f64180aa3"
COMMITTEE = "0xe7f1725e7734ce288f8367e1bb143e90bb3f0512"


@cache
def deployment() -> Deployment:
    return Deployment(
        chain_id=31337,
        loan_book_address=to_checksum_address(BOOK),
        loan_book_abi=compile_contract("LoanBook").abi,
        loan_book_block=1,
        committee_address=to_checksum_address(COMMITTEE),
        committee_abi=compile_contract("DisbursementCommittee").abi,
        committee_block=2,
    )


def _events() -> list[tuple[str, dict[str, Any]]]:
    d = deployment()
    return [(BOOK, e) for e in d.loan_book_abi if e["type"] == "event"] + [
        (COMMITTEE, e) for e in d.committee_abi if e["type"] == "event"
    ]


def _value(abi_type: str) -> st.SearchStrategy[Any]:
    if abi_type.endswith("[]") or abi_type.endswith("]"):
        return st.lists(_value(abi_type[: abi_type.index("[")]), max_size=4)
    if abi_type.startswith("uint"):
        return st.integers(0, 2 ** int(abi_type[4:] or 256) - 1)
    if abi_type.startswith("int"):
        bits = int(abi_type[3:] or 256)
        return st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    if abi_type == "address":
        return st.binary(min_size=20, max_size=20).map(lambda b: to_checksum_address(b))
    if abi_type == "bool":
        return st.booleans()
    if abi_type.startswith("bytes"):
        size = int(abi_type[5:])
        return st.binary(min_size=size, max_size=size)
    raise AssertionError(f"no strategy for {abi_type}")


def _normal(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, str):
        return value.lower()
    if isinstance(value, (list, tuple)):
        return [_normal(v) for v in value]
    return value


@st.composite
def raw_logs(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    address, abi = draw(st.sampled_from(_events()))
    values = {arg["name"]: draw(_value(arg["type"])) for arg in abi["inputs"]}
    topics = ["0x" + event_abi_to_log_topic(abi).hex()]
    topics += ["0x" + encode([a["type"]], [values[a["name"]]]).hex() for a in abi["inputs"] if a["indexed"]]
    data_args = [a for a in abi["inputs"] if not a["indexed"]]
    data = encode([a["type"] for a in data_args], [values[a["name"]] for a in data_args])
    log = {
        "address": address,
        "topics": topics,
        "data": "0x" + data.hex(),
        "blockNumber": "0x10",
        "blockHash": "0x" + "ab" * 32,
        "blockTimestamp": "0x6000",
        "transactionHash": "0x" + "cd" * 32,
        "transactionIndex": "0x1",
        "logIndex": "0x2",
    }
    return abi, log


@settings(max_examples=200, deadline=None)
@given(raw_logs())
def test_decoder_matches_web3(case: tuple[dict[str, Any], dict[str, Any]]) -> None:
    abi, log = case
    decoded = LogDecoder(deployment()).decode(log)
    reference = get_event_data(
        Web3().codec,
        abi,  # type: ignore[arg-type]
        {
            **log,
            "topics": [bytes.fromhex(t[2:]) for t in log["topics"]],
            "data": bytes.fromhex(log["data"][2:]),
            "blockNumber": 16,
            "logIndex": 2,
            "transactionIndex": 1,
        },  # type: ignore[arg-type]
    )
    assert decoded.event == reference["event"]
    assert decoded.args == {name: _normal(value) for name, value in reference["args"].items()}
    assert decoded.contract == ("LoanBook" if log["address"] == BOOK else "DisbursementCommittee")
    assert decoded.loan_id == decoded.args.get("loan_id")
    assert (decoded.block_number, decoded.log_index, decoded.tx_index, decoded.block_timestamp) == (
        16,
        2,
        1,
        0x6000,
    )


def test_an_unknown_event_is_kept_with_its_raw_topics_and_data() -> None:
    log = {
        "address": BOOK,
        "topics": ["0x" + "11" * 32],
        "data": "0xdeadbeef",
        "blockNumber": "0x1",
        "blockHash": "0x" + "ab" * 32,
        "transactionHash": "0x" + "cd" * 32,
        "transactionIndex": "0x0",
        "logIndex": "0x0",
    }
    decoded = LogDecoder(deployment()).decode(log)
    assert (decoded.event, decoded.contract, decoded.args) == (UNKNOWN_EVENT, "LoanBook", {})
    assert decoded.topics == log["topics"] and decoded.data == "0xdeadbeef"
    assert decoded.block_timestamp is None  # filled from the block header by the indexer


@pytest.mark.parametrize("contract", ["LoanBook", "DisbursementCommittee"])
def test_every_event_has_a_decoder(contract: str) -> None:
    decoder = LogDecoder(deployment())
    names = {name for owner, name in decoder.known_events() if owner == contract}
    abi = deployment().loan_book_abi if contract == "LoanBook" else deployment().committee_abi
    assert names == {e["name"] for e in abi if e["type"] == "event"}
