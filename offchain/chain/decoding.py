"""Decode raw `eth_getLogs` entries of LoanBook and DisbursementCommittee with their ABIs.

The indexer decodes tens of thousands of logs per second, so the common case avoids the generic
ABI machinery: every LoanBook event and almost every committee event has only static one-word
fields, which are read straight from the hex of the topics and the data. Anything else (the
committee's `EpochBumped` carries a dynamic array) goes through `eth_abi`.

Values come out JSON-ready, as they are stored in `caas_chain_events.args` and published on the
bus: integers as int, `bytesN` and addresses as lowercase 0x hex, bools as bool.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi import decode as abi_decode
from eth_utils import event_abi_to_log_topic

from offchain.chain.contracts import Deployment

LOAN_BOOK = "LoanBook"
COMMITTEE = "DisbursementCommittee"
UNKNOWN_EVENT = "UNKNOWN"

WordDecoder = Callable[[str], Any]  # 64 hex characters -> value


def _uint(word: str) -> int:
    return int(word, 16)


def _int(word: str) -> int:
    value = int(word, 16)
    # every intN is sign-extended to 256 bits on the wire
    return value - (1 << 256) if value >= 1 << 255 else value


def _bytes(size: int) -> WordDecoder:
    def decode(word: str) -> str:
        return "0x" + word[: 2 * size]

    return decode


def _address(word: str) -> str:
    return "0x" + word[24:]


def _bool(word: str) -> bool:
    return word[-1] != "0"


def _word_decoder(abi_type: str) -> WordDecoder | None:
    """A decoder for a type that fills exactly one 32-byte word, else None."""
    if "[" in abi_type or "(" in abi_type or abi_type.startswith("tuple"):
        return None  # arrays and structs: eth_abi
    if abi_type.startswith("uint"):
        return _uint
    if abi_type.startswith("int"):
        return _int
    if abi_type == "address":
        return _address
    if abi_type == "bool":
        return _bool
    if abi_type.startswith("bytes") and abi_type[5:].isdigit():
        return _bytes(int(abi_type[5:]))
    return None


def _json_ready(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, str) and value.startswith("0x"):
        return value.lower()
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    return value


def _canonical_type(item: Mapping[str, Any]) -> str:
    abi_type = str(item["type"])
    if abi_type.startswith("tuple"):
        inner = ",".join(_canonical_type(component) for component in item["components"])
        return f"({inner}){abi_type[5:]}"
    return abi_type


@dataclass(frozen=True)
class EventSpec:
    contract: str
    name: str
    indexed: tuple[tuple[str, WordDecoder | None], ...]  # (name, decoder) per topic after topic 0
    fields: tuple[str, ...]  # names of the data fields, in order
    types: tuple[str, ...]  # their ABI types
    word_decoders: tuple[WordDecoder, ...] | None  # all static one-word: the fast path

    @classmethod
    def from_abi(cls, contract: str, item: Mapping[str, Any]) -> EventSpec:
        inputs = item.get("inputs", [])
        indexed = tuple(
            # an indexed dynamic value is only its keccak hash in the topic
            (str(arg["name"]), _word_decoder(str(arg["type"])) or _bytes(32))
            for arg in inputs
            if arg.get("indexed")
        )
        data_args = [arg for arg in inputs if not arg.get("indexed")]
        decoders = [_word_decoder(str(arg["type"])) for arg in data_args]
        return cls(
            contract=contract,
            name=str(item["name"]),
            indexed=indexed,
            fields=tuple(str(arg["name"]) for arg in data_args),
            types=tuple(_canonical_type(arg) for arg in data_args),
            word_decoders=None if any(d is None for d in decoders) else tuple(d for d in decoders if d),
        )

    def decode_args(self, topics: Sequence[str], data: str) -> dict[str, Any]:
        args: dict[str, Any] = {}
        for (name, decoder), topic in zip(self.indexed, topics[1:], strict=False):
            args[name] = decoder(topic[2:]) if decoder else topic
        body = data[2:] if data.startswith("0x") else data
        if self.word_decoders is not None:
            for i, (name, decoder) in enumerate(zip(self.fields, self.word_decoders, strict=True)):
                args[name] = decoder(body[64 * i : 64 * (i + 1)])
        elif self.fields:
            values = abi_decode(list(self.types), bytes.fromhex(body))
            for name, value in zip(self.fields, values, strict=True):
                args[name] = _json_ready(value)
        return args


@dataclass(slots=True)
class DecodedLog:
    block_number: int
    block_hash: str
    block_timestamp: int | None  # from the log when the node includes it, else filled later
    tx_hash: str
    tx_index: int
    log_index: int
    address: str  # lowercase
    contract: str
    event: str
    loan_id: str | None
    args: dict[str, Any]
    topics: list[str]
    data: str

    @property
    def key(self) -> tuple[str, str, int]:
        """The unique key of `caas_chain_events` within one chain."""
        return (self.block_hash, self.tx_hash, self.log_index)

    def event_id(self, chain_id: int) -> str:
        """Stable across relays, replays and restarts; a reorged copy gets a new one."""
        return f"{chain_id}:{self.block_hash}:{self.log_index}"

    @property
    def in_event_chain(self) -> bool:
        """LoanBook folds exactly its own loan events into `event_chain(loan_id)`."""
        return self.contract == LOAN_BOOK and self.loan_id is not None

    def raw_topics(self) -> list[bytes]:
        return [bytes.fromhex(topic[2:]) for topic in self.topics]

    def raw_data(self) -> bytes:
        return bytes.fromhex(self.data[2:])


class LogDecoder:
    """Knows every event of both contracts, keyed by (address, topic 0)."""

    def __init__(self, deployment: Deployment) -> None:
        self.addresses = {
            deployment.loan_book_address.lower(): LOAN_BOOK,
            deployment.committee_address.lower(): COMMITTEE,
        }
        self._specs: dict[tuple[str, str], EventSpec] = {}
        for address, abi, contract in (
            (deployment.loan_book_address, deployment.loan_book_abi, LOAN_BOOK),
            (deployment.committee_address, deployment.committee_abi, COMMITTEE),
        ):
            for item in abi:
                if item.get("type") == "event" and not item.get("anonymous"):
                    topic = "0x" + event_abi_to_log_topic(item).hex()  # type: ignore[arg-type]
                    self._specs[(address.lower(), topic)] = EventSpec.from_abi(contract, item)

    def known_events(self) -> set[tuple[str, str]]:
        """(contract, event name) of every event this decoder reads."""
        return {(spec.contract, spec.name) for spec in self._specs.values()}

    def decode(self, log: Mapping[str, Any]) -> DecodedLog:
        address = str(log["address"]).lower()
        topics = [str(t).lower() for t in log["topics"]]
        data = str(log.get("data") or "0x").lower()
        spec = self._specs.get((address, topics[0])) if topics else None
        if spec is None:
            contract, event, args = self.addresses.get(address, address), UNKNOWN_EVENT, {}
        else:
            contract, event, args = spec.contract, spec.name, spec.decode_args(topics, data)
        loan_id = args.get("loan_id")
        timestamp = log.get("blockTimestamp")
        return DecodedLog(
            block_number=int(log["blockNumber"], 16),
            block_hash=str(log["blockHash"]).lower(),
            block_timestamp=int(timestamp, 16) if timestamp else None,
            tx_hash=str(log["transactionHash"]).lower(),
            tx_index=int(log["transactionIndex"], 16),
            log_index=int(log["logIndex"], 16),
            address=address,
            contract=contract,
            event=event,
            loan_id=loan_id if isinstance(loan_id, str) else None,
            args=args,
            topics=topics,
            data=data,
        )
