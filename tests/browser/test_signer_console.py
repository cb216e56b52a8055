"""Signer console: two signers take a loan to APPROVED on chain; a tampered agreement is refused."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import pytest
from conftest import Console
from eth_account.messages import encode_typed_data
from eventually import eventually
from system_support import Stack

pytestmark = pytest.mark.stack


def pending_loan(stack: Stack, external_id: str) -> str:
    """A loan accepted and PENDING on chain, with no approvals yet."""
    return stack.pending_loan(external_id, amount=250_000_00)


async def tamper_agreement(stack: Stack, loan_id: str) -> None:
    """The server's copy of the agreement altered: the money would go to another account."""
    db = await asyncpg.connect(stack.dev_env["DATABASE_URL"].replace("postgresql+asyncpg", "postgresql"))
    try:
        stored = await db.fetchval(
            "SELECT agreement FROM caas_originations WHERE loan_id = $1", uuid.UUID(loan_id)
        )
        agreement = json.loads(stored)
        agreement["payout"]["account_number"] = "0000000000"
        await db.execute(
            "UPDATE caas_originations SET agreement = $1::jsonb WHERE loan_id = $2",
            json.dumps(agreement),
            uuid.UUID(loan_id),
        )
    finally:
        await db.close()


def sign_in(console: Console) -> None:
    console.open("/console/signer")
    console.page.get_by_label("Partner access token").fill(console.stack.dev_env["DEMO_PARTNER_TOKEN"])
    console.page.get_by_role("button", name="Use token").click()
    console.page.get_by_role("button", name="Connect wallet").click()


def review(console: Console, loan_id: str) -> Any:
    console.wait(f'button.review[data-loan="{loan_id}"]').click()
    console.wait("#review h2")
    return console.page


def test_two_signers_take_a_loan_to_approved(browser: Any, stack: Stack) -> None:
    loan_id = pending_loan(stack, f"console-sign-{time.time_ns()}")
    required = stack.get(f"/v1/loans/{loan_id}/approval-request")["required"]
    assert required == 2
    for index, key in enumerate(stack.signer_keys[:required]):
        console = Console(browser, stack, key=key, viewport="desktop" if index == 0 else "phone")
        try:
            sign_in(console)
            page = review(console, loan_id)
            checks = page.locator("[data-check]")
            assert checks.count() == 7
            assert page.locator('[data-check="mismatch"]').count() == 0
            assert "*" in page.locator("#payout-account").inner_text()
            if index == 0:
                console.screenshot("signer-1280")
            else:
                console.screenshot("signer-390")
            # keyboard: the sign button is reachable and pressed with Enter
            page.locator("#sign").focus()
            page.keyboard.press("Enter")
            console.wait("#result")
            assert f"{index + 1} of {required}" in page.locator("#result").inner_text()
            assert len(console.signed) == 1
            # what a hardware wallet shows for typed data: the domain hash and the message hash
            signable = encode_typed_data(full_message=json.loads(console.signed[0]))
            assert page.locator("#domain-hash").inner_text() == "0x" + signable.header.hex()
            assert page.locator("#message-hash").inner_text() == "0x" + signable.body.hex()
            if index == required - 1:
                console.wait("#executed", 60_000)
                assert "APPROVED" in page.locator("#executed").inner_text()
            assert console.errors() == []
        finally:
            console.close()
    approved = stack.events(loan_id, "LoanApproved")
    assert len(approved) == 1  # the committee's approval, mined (the loan may be disbursed since)


def test_an_agreement_altered_on_the_server_is_refused(browser: Any, stack: Stack) -> None:
    loan_id = pending_loan(stack, f"console-tamper-{time.time_ns()}")
    # Playwright's sync API holds this thread's event loop: the database write runs on another.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, tamper_agreement(stack, loan_id)).result()
    console = Console(browser, stack, key=stack.signer_keys[0])
    try:
        sign_in(console)
        page = review(console, loan_id)
        mismatches = page.locator('[data-check="mismatch"]')
        assert mismatches.count() == 2  # terms_hash and payout_ref recomputed from the altered agreement
        assert page.locator("#sign").is_disabled()
        assert "Refusing to sign" in page.locator("#refusal").inner_text()
        console.screenshot("signer-refused-1280")
        assert console.signed == []
        assert stack.get(f"/v1/loans/{loan_id}/approval-request")["approvals"] == 0
        assert console.errors() == []
    finally:
        console.close()


def test_a_governance_proposal_is_decoded_and_confirmed_from_the_wallet(browser: Any, stack: Stack) -> None:
    loan_id = pending_loan(stack, f"console-governance-{time.time_ns()}")
    chain_loan_id = stack.loan(loan_id)["chain_loan_id"]
    reason = int.from_bytes(b"console-test".ljust(32, b"\0"), "big")
    expires = stack.head_timestamp() + 86_400
    propose = stack.committee.encode_abi(
        "propose", args=[6, "0x" + "00" * 20, bytes.fromhex(chain_loan_id[2:]), reason, expires]
    )
    stack.transact(stack.signer_keys[0], stack.deployment.committee_address, propose)
    proposal = stack.committee.functions.proposal_count().call()
    console = Console(browser, stack, key=stack.signer_keys[1])
    try:
        sign_in(console)
        shown = console.wait(f'[data-proposal="{proposal}"]')
        assert shown.inner_text() == f'Cancel loan {chain_loan_id} (reason "console-test")'
        assert stack.committee.functions.confirmations(proposal).call() == 1
        console.page.get_by_role("button", name=f"Confirm #{proposal}").click()
        eventually(
            lambda: "confirm mined" in console.page.locator("#status").inner_text(), what="the confirmation"
        )
        assert stack.committee.functions.confirmations(proposal).call() == 2
        assert console.page.get_by_role("button", name=f"Execute #{proposal}").is_enabled()
        console.screenshot("signer-governance-1280")
        assert console.errors() == []
    finally:
        console.close()
    assert stack.loan(loan_id)["chain_state"] == "PENDING"  # confirmed, not executed
