"""Auditor console: the loan book from the chain; a tampered backend copy of the events is flagged."""

from __future__ import annotations

import asyncio
import csv
import io
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import pytest
from conftest import Console
from system_support import Stack

pytestmark = pytest.mark.stack


async def tamper_events(stack: Stack, loan_id: str) -> int:
    """The backend's copy of the loan's LoanCreated altered: principal 1 instead of the real one."""
    db = await asyncpg.connect(stack.dev_env["DATABASE_URL"].replace("postgresql+asyncpg", "postgresql"))
    try:
        status = await db.execute(
            "UPDATE caas_chain_events SET args = jsonb_set(args, '{principal}', '1'::jsonb) "
            "WHERE event = 'LoanCreated' AND loan_id = "
            "(SELECT chain_loan_id FROM caas_loans WHERE id = $1)",
            uuid.UUID(loan_id),
        )
        return int(status.split()[-1])
    finally:
        await db.close()


def test_the_auditor_flags_a_tampered_backend_copy_of_the_events(browser: Any, stack: Stack) -> None:
    honest = stack.approved_loan(f"console-audit-honest-{time.time_ns()}")
    tampered = stack.approved_loan(f"console-audit-tampered-{time.time_ns()}")
    for loan_id in (honest, tampered):  # disbursed: the backend's state settled too
        stack.loan_in(loan_id, "ACTIVE", within_s=120)
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(asyncio.run, tamper_events(stack, tampered)).result() == 1
    for viewport in ("desktop", "phone"):
        console = Console(browser, stack, viewport=viewport)
        try:
            console.open("/console/auditor")
            page = console.page
            page.get_by_label("Partner token for the backend's view").fill(
                stack.dev_env["DEMO_PARTNER_TOKEN"]
            )
            page.get_by_label("Partner token for the backend's view").press("Enter")  # keyboard submits
            console.wait(f'[data-loan="{tampered}"]')
            # every loan's event_chain recomputed from the logs equals LoanBook.event_chain
            assert page.locator('[data-chain="mismatch"]').count() == 0, page.locator("#book").inner_text()
            assert page.locator('[data-chain="ok"]').count() >= 2
            assert page.locator(f'[data-loan="{honest}"]').get_attribute("data-backend") == "ok"
            flagged = page.locator(f'[data-loan="{tampered}"]')
            assert flagged.get_attribute("data-backend") == "mismatch"
            assert "LoanCreated.principal: backend 1" in flagged.inner_text()
            console.screenshot(f"auditor-{1280 if viewport == 'desktop' else 390}")
            if viewport == "desktop":
                with page.expect_download() as download:
                    page.get_by_role("button", name="Export CSV").click()
                rows = list(csv.DictReader(io.StringIO(open(download.value.path()).read())))
                by_id = {row["backend_loan_id"]: row for row in rows}
                assert by_id[tampered]["backend_mismatches"].startswith("LoanCreated.principal")
                assert by_id[honest]["backend_mismatches"] == ""
                assert by_id[honest]["event_chain_ok"] == "true"
            assert console.errors() == []
        finally:
            console.close()
