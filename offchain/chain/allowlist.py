"""What the backend's sending key may be asked to sign, per calling service: the one place.

The sending key holds ORIGINATOR_ROLE and SERVICER_ROLE on the LoanBook: whatever it signs, the
chain takes as the book of record. So every transaction intent names the service that asked for
it (`caas_tx_intents.caller`), and an intent is recorded (offchain.chain.sender.submit*) and
signed (SenderWorker) only if that service may make that call:

- to the deployment's LoanBook or DisbursementCommittee, nothing else;
- one of the functions the service needs (below), with value 0;
- `propose` only as a write-off proposal (the committee's other actions are governance: signers,
  threshold, role grants, pause; never the backend's to start).

Over HTTP (`POST :8008/v1/tx-intents`) a service may ask only for what the chain verifies by
itself (`approve_with_signatures`: the committee checks M-of-N signer signatures). Everything the
chain takes on the backend's word (a loan's terms, a payout, a repayment, a fee, a default) is
recorded in-process, in the same database transaction as the fact it records (the payment, the
payout, the agreement), so no caller can ask for one without the fact existing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast

from eth_abi import decode
from eth_utils import abi_to_signature, function_abi_to_4byte_selector

LOAN_BOOK = "LoanBook"
COMMITTEE = "DisbursementCommittee"
ACTION_WRITE_OFF = 5  # DisbursementCommittee ACTION_WRITE_OFF
ZERO_ADDRESS = "0x" + "00" * 20


class CallNotAllowed(ValueError):
    """The caller may not ask the sending key for this call (a 403 at the API)."""


def _write_off_proposal(args: Sequence[Any]) -> str | None:
    action, target, _loan, value, _expires = args
    if action != ACTION_WRITE_OFF or str(target).lower() != ZERO_ADDRESS or value != 0:
        return "propose is allowed only as a write-off proposal (action 5, no target, no value)"
    return None


@dataclass(frozen=True)
class Permit:
    contract: str
    function: str
    # may be asked for over HTTP, not only in-process (see the module docstring)
    http: bool = False
    # a further check of the decoded arguments: a reason to refuse, or None
    check: Callable[[Sequence[Any]], str | None] | None = None


ALLOWED: dict[str, tuple[Permit, ...]] = {
    # offer acceptance creates the loan; the committee's signatures, collected here, approve it
    "gateway": (
        Permit(LOAN_BOOK, "create_loan"),
        Permit(COMMITTEE, "approve_with_signatures", http=True),
    ),
    "disbursement": (Permit(LOAN_BOOK, "record_disbursement"),),
    "repayment": (Permit(LOAN_BOOK, "record_repayment"), Permit(LOAN_BOOK, "reverse_repayment")),
    "collections": (
        Permit(LOAN_BOOK, "assess_late_fee"),
        Permit(LOAN_BOOK, "mark_default"),
        Permit(COMMITTEE, "propose", check=_write_off_proposal),
    ),
}
# the services that may record intents at all (and so call POST /v1/tx-intents)
CALLERS = frozenset(ALLOWED)


@dataclass(frozen=True)
class _Function:
    contract: str
    name: str
    input_types: tuple[str, ...]


def _types(inputs: list[dict[str, Any]]) -> tuple[str, ...]:
    def one(item: dict[str, Any]) -> str:
        if item["type"].startswith("tuple"):
            return "(" + ",".join(one(c) for c in item["components"]) + ")" + item["type"][5:]
        return str(item["type"])

    return tuple(one(item) for item in inputs)


class Allowlist:
    """ALLOWED resolved against one deployment: addresses and the selectors of its ABIs."""

    def __init__(
        self, *, loan_book: str, loan_book_abi: list[dict], committee: str, committee_abi: list[dict]
    ) -> None:
        self.addresses = {loan_book.lower(): LOAN_BOOK, committee.lower(): COMMITTEE}
        self._functions: dict[tuple[str, bytes], _Function] = {}
        for contract, abi in ((LOAN_BOOK, loan_book_abi), (COMMITTEE, committee_abi)):
            for item in abi:
                if item.get("type") == "function":
                    selector = bytes(function_abi_to_4byte_selector(cast(Any, item)))
                    self._functions[(contract, selector)] = _Function(
                        contract, item["name"], _types(item.get("inputs", []))
                    )
        for permits in ALLOWED.values():
            for permit in permits:
                if not any(
                    f.contract == permit.contract and f.name == permit.function
                    for f in self._functions.values()
                ):
                    raise ValueError(f"the deployment's {permit.contract} has no function {permit.function}")

    @classmethod
    def of(cls, deployment: Any) -> Allowlist:
        """The allowlist of a offchain.chain.contracts.Deployment (cached per deployment)."""
        return _cached(deployment)

    def check(self, caller: str | None, to: str, data: str, value: int = 0, *, http: bool = False) -> str:
        """The function name when `caller` may make this call; raises CallNotAllowed otherwise."""
        permits = ALLOWED.get(caller or "")
        if not permits:
            raise CallNotAllowed(f"{caller!r} may not ask the sending key for anything")
        contract = self.addresses.get(to.lower())
        if contract is None:
            raise CallNotAllowed(f"{to} is neither the deployment's LoanBook nor its DisbursementCommittee")
        if value:
            raise CallNotAllowed("calls to the loan book carry no value")
        raw = bytes.fromhex(data[2:] if data.startswith(("0x", "0X")) else data)
        function = self._functions.get((contract, raw[:4]))
        if function is None:
            raise CallNotAllowed(f"calldata names no function of the {contract}")
        permit = next((p for p in permits if (p.contract, p.function) == (contract, function.name)), None)
        if permit is None:
            raise CallNotAllowed(f"{caller} may not call {contract}.{function.name}")
        if http and not permit.http:
            raise CallNotAllowed(
                f"{contract}.{function.name} is recorded in-process with the fact it records, not over HTTP"
            )
        if permit.check is not None:
            try:
                args = decode(list(function.input_types), raw[4:])
            except Exception as error:
                raise CallNotAllowed(
                    f"calldata of {function.name} does not decode: {type(error).__name__}"
                ) from None
            reason = permit.check(args)
            if reason is not None:
                raise CallNotAllowed(reason)
        return function.name


@lru_cache(maxsize=16)
def _cached_by_addresses(loan_book: str, committee: str, abis: tuple[str, str]) -> Allowlist:
    import json

    return Allowlist(
        loan_book=loan_book,
        loan_book_abi=json.loads(abis[0]),
        committee=committee,
        committee_abi=json.loads(abis[1]),
    )


_by_identity: dict[int, tuple[Any, Allowlist]] = {}


def _cached(deployment: Any) -> Allowlist:
    held = _by_identity.get(id(deployment))
    if held is not None and held[0] is deployment:
        return held[1]
    import json

    allowlist = _cached_by_addresses(
        deployment.loan_book_address.lower(),
        deployment.committee_address.lower(),
        (
            json.dumps(deployment.loan_book_abi, sort_keys=True),
            json.dumps(deployment.committee_abi, sort_keys=True),
        ),
    )
    if len(_by_identity) > 64:
        _by_identity.clear()
    _by_identity[id(deployment)] = (deployment, allowlist)
    return allowlist


def signature_of(abi_item: dict[str, Any]) -> str:
    """`name(types)` of an ABI function item (docs and error messages)."""
    return str(abi_to_signature(cast(Any, abi_item)))
