"""A partner's client, generated with openapi-python-client from the gateway's own OpenAPI (fetched
over HTTP from the running gateway), drives the journey as a partner would: application ->
offer -> accept -> approval-request -> approvals, reads typed pages and answers, sees the
RateLimit-* headers, and reads a 422's errors through the generated types.

The gateway serves HTTP on a port with underwriting, orchestration (sender + indexer),
disbursement and repayment running against a fresh database, Redis and Anvil (money_support).
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from eventually import eventually_async
from journey_support import valid_nuban
from money_support import _partner_headers, running_stack

from offchain.chain.contracts import sign_approval
from offchain.platform.devkeys import dev_roles
from offchain.platform.settings import Settings

pytestmark = pytest.mark.asyncio
PACKAGE = "caas_partner_client"


def _generate(spec: Path, into: Path) -> Any:
    """openapi-python-client's `generate`, as a partner runs it; the package, imported."""
    tool = Path(sys.executable).parent / "openapi-python-client"
    config = into / "config.yaml"
    config.write_text(f"package_name_override: {PACKAGE}\npost_hooks: []\n")
    command = [str(tool), "generate", "--path", str(spec), "--meta", "none", "--config", str(config)]
    done = subprocess.run(
        [*command, "--output-path", str(into / PACKAGE)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Warning" not in done.stdout + done.stderr, done.stdout + done.stderr  # nothing skipped
    sys.path.insert(0, str(into))
    return importlib.import_module(PACKAGE)


def _unload() -> None:
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]


async def test_a_generated_client_drives_the_journey_and_reads_a_422(
    money_settings: Settings, free_port, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    async with running_stack(money_settings, free_port) as (settings, http, _sim):
        spec = tmp_path / "openapi.json"
        fetched = await http.get("/openapi.json")
        assert fetched.status_code == 200
        spec.write_bytes(fetched.content)
        started = time.monotonic()
        _generate(spec, tmp_path)
        generated_s = time.monotonic() - started
        try:
            await _journey(settings, str(http.base_url))
        finally:
            _unload()
            sys.path.remove(str(tmp_path))
        assert generated_s < 60, generated_s


async def _journey(settings: Settings, base_url: str) -> None:
    from caas_partner_client import AuthenticatedClient  # type: ignore[import-not-found]
    from caas_partner_client.api.default import (  # type: ignore[import-not-found]
        accept_offer,
        add_approval,
        approval_request,
        get_application,
        get_loan,
        list_loans,
        submit_application,
    )
    from caas_partner_client.models import (  # type: ignore[import-not-found]
        AcceptOfferIn,
        AcceptOfferOut,
        Amount,
        AmountCurrency,
        ApplicationIn,
        ApplicationOut,
        ApprovalIn,
        ApprovalOut,
        ApprovalRequestOut,
        Borrower,
        LoanOut,
        PageLoanOut,
        PayoutIn,
        PayoutInMethod,
        ValidationProblem,
    )

    token = _partner_headers(settings)["Authorization"].removeprefix("Bearer ")
    client = AuthenticatedClient(base_url=base_url, token=token, raise_on_unexpected_status=True)
    async with client as partner:
        external_id = f"gen-{uuid.uuid4().hex[:8]}"
        application = ApplicationIn(
            external_id=external_id,
            borrower=Borrower(sme_user_id="acme-trading-ltd"),
            amount=Amount(value=500_000_00, currency=AmountCurrency.NGN),
            tenor_months=6,
            purpose="inventory",
        )
        submitted = await submit_application.asyncio_detailed(
            client=partner, body=application, idempotency_key=f"{external_id}-app"
        )
        assert submitted.status_code == 201 and isinstance(submitted.parsed, ApplicationOut)
        assert int(submitted.headers["RateLimit-Remaining"]) >= 0  # declared, and sent
        replayed = await submit_application.asyncio_detailed(
            client=partner, body=application, idempotency_key=f"{external_id}-app"
        )
        assert replayed.parsed.id == submitted.parsed.id  # the key honoured: one application

        async def offered() -> ApplicationOut | None:
            found = await get_application.asyncio(application_id=submitted.parsed.id, client=partner)
            return found if found.status.value not in ("submitted", "underwriting") else None

        decided = await eventually_async(offered)
        assert decided.status.value == "offered", decided
        offer = decided.offers[0]
        assert offer.total_due.value > offer.amount.value and offer.schedule

        accepted = await accept_offer.asyncio_detailed(
            offer_id=offer.id,
            client=partner,
            body=AcceptOfferIn(
                payout=PayoutIn(
                    method=PayoutInMethod.BANK_TRANSFER, account_number=valid_nuban(), bank_code="058"
                )
            ),
            idempotency_key=f"{external_id}-accept",
        )
        assert accepted.status_code == 201 and isinstance(accepted.parsed, AcceptOfferOut)
        loan_id = accepted.parsed.loan_id

        async def pending() -> LoanOut | None:
            loan = await get_loan.asyncio(loan_id=loan_id, client=partner)
            return loan if loan.chain_state == "PENDING" else None

        await eventually_async(pending)
        request = await approval_request.asyncio(loan_id=loan_id, client=partner)
        assert isinstance(request, ApprovalRequestOut) and request.required >= 1
        typed_data = request.typed_data.to_dict()
        answers = []
        for key in [s.private_key for s in dev_roles().signers[: request.required]]:
            signer, signature = sign_approval(typed_data, key)
            answers.append(
                await add_approval.asyncio(
                    loan_id=loan_id,
                    client=partner,
                    body=ApprovalIn(signer=signer, signature="0x" + signature.hex()),
                )
            )
        assert all(isinstance(a, ApprovalOut) for a in answers)
        assert [(a.approvals, a.required, a.submitted) for a in answers][-1] == (
            request.required,
            request.required,
            True,
        )

        page = await list_loans.asyncio(client=partner, limit=10)
        assert isinstance(page, PageLoanOut) and all(isinstance(item, LoanOut) for item in page.data)
        assert loan_id in [item.id for item in page.data]

        # a refusal parsed through the generated types: every field at fault, with why
        refused = await submit_application.asyncio_detailed(
            client=AuthenticatedClient(base_url=base_url, token=token),
            body=ApplicationIn(
                external_id=f"{external_id}-bad",
                borrower=Borrower(sme_user_id="acme-trading-ltd"),
                amount=Amount(value=500_000_00, currency=AmountCurrency.NGN),
                tenor_months=0,
                purpose="inventory",
            ),
        )
        assert refused.status_code == 422
        problem = refused.parsed
        assert isinstance(problem, ValidationProblem), refused.content
        assert problem.status == 422 and problem.type_ == "urn:caas:problem:validation-error"
        assert [e.field for e in problem.errors] == ["body.tenor_months"]
        assert problem.errors[0].reason
    # the unauthenticated refusal the generated client sees without a token
    async with httpx.AsyncClient(base_url=base_url) as anonymous:
        assert (await anonymous.get("/v1/loans")).status_code == 401
