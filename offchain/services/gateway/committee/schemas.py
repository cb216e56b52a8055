"""The committee approval flow's wire shapes (DESIGN §4; fields added, none removed)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ApprovalIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    signer: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$", description="the committee signer's address")
    signature: str = Field(
        max_length=140,
        pattern=r"^0x[0-9a-fA-F]*$",
        description=(
            "EIP-712 signature of `typed_data` from approval-request: 65 bytes (r, s, v) with v 27/28 "
            "(eth_signTypedData_v4), v 0/1 or 35/36, or EIP-2098 compact 64 bytes; low s. Kept in the "
            "65-byte v 27/28 form the committee contract takes."
        ),
    )
    deadline: int | None = Field(
        None, description="the deadline the signature was made for; if given, it must be the loan's"
    )


class ApprovalRequestOut(BaseModel):
    typed_data: dict[str, Any] = Field(
        description="EIP-712 JSON as eth_signTypedData_v4 / eth_account sign it"
    )
    required: int = Field(description="approvals that execute the approval (committee.required_approvals)")
    approvals: int = Field(
        description="approvals so far: on chain plus signatures kept here, each signer once"
    )
    signers: list[str] = Field(description="the current committee signers")
    epoch: int = Field(description="the committee epoch the typed data binds")
    deadline: int = Field(
        description="the loan's fixed approval deadline (unix seconds), the same for every signer"
    )
    signed_by: list[str] = Field([], description="signers whose approval is counted already")


class DroppedSignature(BaseModel):
    signer: str
    reason: str


class ApprovalOut(BaseModel):
    loan_id: str
    signer: str
    state: Literal["collecting", "submitted"] = Field(
        description="collecting: below the threshold (or the submission is blocked, see `blocked`); "
        "submitted: one approve_with_signatures is on its way (`tx_intent`)"
    )
    approvals: int
    required: int
    submitted: bool = Field(description="this post reached the threshold and submitted the approval")
    tx_intent: str | None = Field(None, description="idempotency key of the approve_with_signatures intent")
    attempt: int | None = Field(
        None, description="which submission of this loan's approval that is (1, 2, ...)"
    )
    dropped: list[DroppedSignature] = Field(
        [],
        description="kept signatures that would have made the submission revert: removed, ask for new ones",
    )
    blocked: str | None = Field(
        None, description="the threshold is reached but the simulated submission reverts for this reason"
    )
