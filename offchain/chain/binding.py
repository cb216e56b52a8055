"""Typed bindings of LoanBook and DisbursementCommittee, built from the deployment's ABI.

The one way offchain code encodes calls, reads views and decodes logs of the two contracts: the
ABI in `deployments/<network>.json` (`Deployment`) is parsed once per deployment into selectors
and `eth_abi` types per function, calls go out through `offchain.chain.jsonrpc.JsonRpc` (one
batch for many reads). Building a web3 contract object per call cost more CPU than the rest of
a repayment's intake together (profiled); here a call is a dict look-up and one `eth_abi.encode`.

Values decode as web3 decoded them before: `bytesN` as bytes, addresses checksummed, structs as
tuples, so reports and projections read the same.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import event_abi_to_log_topic, keccak, to_checksum_address

from offchain.chain.jsonrpc import Call, JsonRpc, RpcError

BlockId = int | str  # a number, or "latest" / "pending"


def _canonical(item: Mapping[str, Any]) -> str:
    """The ABI type of an input or output, tuples spelled out: `(bytes32,uint256)[]`."""
    kind = str(item["type"])
    if kind.startswith("tuple"):
        inner = ",".join(_canonical(c) for c in item["components"])
        return f"({inner}){kind[len('tuple') :]}"
    return kind


def _normalized(item: Mapping[str, Any], value: Any) -> Any:
    """web3's return normalizers: addresses checksummed, into structs and arrays."""
    kind = str(item["type"])
    if kind.endswith("]"):
        element = {**item, "type": kind[: kind.rindex("[")]}
        return [_normalized(element, v) for v in value]
    if kind == "tuple":
        return tuple(_normalized(c, v) for c, v in zip(item["components"], value, strict=True))
    if kind == "address":
        return to_checksum_address(value)
    return value


@dataclass(frozen=True)
class Function:
    name: str
    selector: bytes
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    abi: Mapping[str, Any]

    @classmethod
    def from_abi(cls, item: Mapping[str, Any]) -> Function:
        inputs = tuple(_canonical(i) for i in item.get("inputs", []))
        return cls(
            name=str(item["name"]),
            selector=keccak(text=f"{item['name']}({','.join(inputs)})")[:4],
            inputs=inputs,
            outputs=tuple(_canonical(o) for o in item.get("outputs", [])),
            abi=item,
        )

    def encode(self, args: Sequence[Any]) -> bytes:
        if len(args) != len(self.inputs):
            raise TypeError(f"{self.name} takes {len(self.inputs)} arguments, got {len(args)}")
        return self.selector + abi_encode(list(self.inputs), list(args))

    def decode(self, raw: str | bytes) -> tuple[Any, ...]:
        data = bytes.fromhex(raw[2:]) if isinstance(raw, str) else raw
        values = abi_decode(list(self.outputs), data)
        return tuple(_normalized(o, v) for o, v in zip(self.abi.get("outputs", []), values, strict=True))

    def output_fields(self) -> list[str]:
        """The field names of the struct this function returns (its one output)."""
        return [c["name"] for c in self.abi["outputs"][0]["components"]]


@dataclass(frozen=True)
class DecodedEvent:
    event: str
    args: dict[str, Any]


class Contract:
    """One deployed contract: calldata, `eth_call` requests and their answers, logs."""

    def __init__(self, address: str, abi: Sequence[Mapping[str, Any]]) -> None:
        self.address = address
        self.abi = abi
        self._functions: dict[str, list[Function]] = {}
        self._events: dict[bytes, Mapping[str, Any]] = {}
        for item in abi:
            if item.get("type") == "function":
                self._functions.setdefault(str(item["name"]), []).append(Function.from_abi(item))
            elif item.get("type") == "event":
                self._events[event_abi_to_log_topic(item)] = item  # type: ignore[arg-type]

    def function(self, name: str, arity: int | None = None) -> Function:
        candidates = self._functions.get(name)
        if not candidates:
            raise AttributeError(f"the ABI has no function {name!r}")
        if len(candidates) == 1 and arity is None:
            return candidates[0]
        matching = [f for f in candidates if arity is None or len(f.inputs) == arity]
        if len(matching) != 1:
            raise TypeError(f"{name}: {len(matching)} overloads take {arity} arguments")
        return matching[0]

    def encode(self, name: str, *args: Any) -> bytes:
        return self.function(name, len(args)).encode(args)

    def calldata(self, name: str, *args: Any) -> str:
        return "0x" + self.encode(name, *args).hex()

    def call_request(
        self, name: str, *args: Any, block: BlockId | Mapping[str, str] = "latest", sender: str | None = None
    ) -> Call:
        """The `eth_call` of a view (for `JsonRpc.batch`)."""
        request: dict[str, Any] = {"to": self.address, "data": self.calldata(name, *args)}
        if sender is not None:
            request["from"] = sender
        at: Any = hex(block) if isinstance(block, int) else block
        return "eth_call", [request, at]

    def decode(self, name: str, raw: Any, arity: int | None = None) -> tuple[Any, ...]:
        """An `eth_call` answer of `name`, decoded; an RpcError in a batch is raised."""
        if isinstance(raw, RpcError):
            raise raw
        return self.function(name, arity).decode(str(raw))

    async def call(self, rpc: JsonRpc, name: str, *args: Any, block: BlockId = "latest") -> tuple[Any, ...]:
        method, params = self.call_request(name, *args, block=block)
        return self.decode(name, await rpc.call(method, *params), len(args))

    async def call_many(
        self, rpc: JsonRpc, calls: Iterable[tuple[str, Sequence[Any]]], *, block: BlockId = "latest"
    ) -> list[tuple[Any, ...]]:
        """Several views in one JSON-RPC batch, answers decoded in order (the first error raised)."""
        wanted = list(calls)
        answers = await rpc.batch([self.call_request(name, *args, block=block) for name, args in wanted])
        return [self.decode(name, raw, len(args)) for (name, args), raw in zip(wanted, answers, strict=True)]

    def decode_log(self, topics: Sequence[bytes], data: bytes) -> DecodedEvent:
        """A log of this contract as web3's `get_event_data` decoded it (name and arguments)."""
        item = self._events[bytes(topics[0])]
        indexed = [i for i in item["inputs"] if i.get("indexed")]
        plain = [i for i in item["inputs"] if not i.get("indexed")]
        values: dict[str, Any] = {}
        for spec, topic in zip(indexed, topics[1:], strict=True):
            values[spec["name"]] = _normalized(spec, abi_decode([_canonical(spec)], bytes(topic))[0])
        decoded = abi_decode([_canonical(i) for i in plain], bytes(data))
        for spec, value in zip(plain, decoded, strict=True):
            values[spec["name"]] = _normalized(spec, value)
        return DecodedEvent(str(item["name"]), {i["name"]: values[i["name"]] for i in item["inputs"]})


ACTION_WRITE_OFF = 5  # DisbursementCommittee action kinds
ZERO_ADDRESS = "0x" + "00" * 20


class LoanBook(Contract):
    """The LoanBook calls the services make, typed."""

    def record_disbursement(self, loan_id: bytes, amount: int, payout_ref: bytes, rail_ref: bytes) -> bytes:
        return self.encode("record_disbursement", loan_id, amount, payout_ref, rail_ref)

    def record_repayment(self, loan_id: bytes, amount: int, payment_ref: bytes) -> bytes:
        return self.encode("record_repayment", loan_id, amount, payment_ref)

    def reverse_repayment(self, loan_id: bytes, payment_ref: bytes, reason: bytes) -> bytes:
        return self.encode("reverse_repayment", loan_id, payment_ref, reason)

    def create_loan(self, loan_id: bytes, terms: tuple[Any, ...]) -> str:
        return self.calldata("create_loan", loan_id, terms)

    def assess_late_fee(self, loan_id: bytes, amount: int, fee_ref: bytes) -> str:
        return self.calldata("assess_late_fee", loan_id, amount, fee_ref)

    def mark_default(self, loan_id: bytes) -> str:
        return self.calldata("mark_default", loan_id)


class Committee(Contract):
    """The DisbursementCommittee calls the services make, typed."""

    def approve_with_signatures(self, loan_id: bytes, deadline: int, signatures: Sequence[bytes]) -> str:
        return self.calldata("approve_with_signatures", loan_id, deadline, list(signatures))

    def propose_write_off(self, loan_id: bytes, expires_at: int) -> str:
        return self.calldata("propose", ACTION_WRITE_OFF, ZERO_ADDRESS, loan_id, 0, expires_at)
