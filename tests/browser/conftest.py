"""The consoles in Debian's Chromium (Playwright), against `caas up` in a scratch directory.

The stack is tests/system's (one `caas up` per session, its fixture reused as it is); the
browser is /usr/bin/chromium (`make chromium`), driven through PyPI's playwright. Every page
collects its console messages and page errors; a test fails on any error among them.

    flock /tmp/caas-ports.lock pytest -p no:ape_test -p no:cacheprovider tests/browser -m stack -s
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

SYSTEM = Path(__file__).resolve().parent.parent / "system"
sys.path.insert(0, str(SYSTEM))
_spec = importlib.util.spec_from_file_location("system_conftest", SYSTEM / "conftest.py")
assert _spec is not None and _spec.loader is not None
system_conftest = importlib.util.module_from_spec(_spec)
sys.modules["system_conftest"] = system_conftest  # its dataclasses look their module up
_spec.loader.exec_module(system_conftest)

from system_support import Stack  # noqa: E402

stack = system_conftest.stack  # the session's `caas up`


@pytest.fixture(scope="session")
def stack_chain() -> str:
    """The consoles run on the embedded Anvil (the system tests parametrize this fixture)."""
    return "anvil"


CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
VIEWPORTS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}

# The stand-in for a wallet extension: an EIP-1193 provider whose signing is done by the test
# (window.__caasWallet, exposed by Playwright) with a dev signer key.
WALLET_JS = """
window.ethereum = {
  isCaasTestWallet: true,
  request: async ({ method, params }) => window.__caasWallet(method, params || []),
  on() {}, removeListener() {},
};
"""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "stack: starts the whole `caas up` stack in a subprocess (slow; ports 8000-8010)"
    )


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make chromium` (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


class Console:
    """One browser page with its console collected and, optionally, a wallet holding `key`."""

    def __init__(self, browser: Any, stack: Stack, *, key: str | None = None, viewport: str = "desktop"):
        self.stack = stack
        self.context = browser.new_context(viewport=VIEWPORTS[viewport])
        self.page = self.context.new_page()
        self.messages: list[str] = []
        self.page.on("console", lambda m: self.messages.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.messages.append(f"error: {e}"))
        self.signed: list[str] = []
        if key is not None:
            account = Account.from_key(key)

            def wallet(method: str, params: list[Any]) -> Any:
                if method in ("eth_requestAccounts", "eth_accounts"):
                    return [account.address]
                if method == "eth_signTypedData_v4":
                    assert params[0].lower() == account.address.lower()
                    typed = json.loads(params[1])
                    self.signed.append(params[1])
                    signed = Account.sign_typed_data(key, full_message=typed)
                    return "0x" + bytes(signed.signature).hex()
                if method == "eth_sendTransaction":  # the signer's own transaction (governance)
                    assert params[0]["from"].lower() == account.address.lower()
                    receipt = stack.transact(key, params[0]["to"], params[0]["data"])
                    return "0x" + bytes(receipt["transactionHash"]).hex()
                raise ValueError(f"wallet: {method} not supported")

            self.page.expose_function("__caasWallet", wallet)
            self.page.add_init_script(WALLET_JS)

    @property
    def gateway(self) -> str:
        return self.stack.dev_env["GATEWAY_URL"]

    def open(self, path: str) -> Any:
        response = self.page.goto(self.gateway + path)
        assert response is not None and response.status == 200
        policy = response.headers["content-security-policy"]
        for directive in (
            "default-src 'self'",
            "script-src 'self';",
            "object-src 'none'",
            "frame-ancestors 'none'",
        ):
            assert directive in policy, policy
        return response

    def wait(self, selector: str, timeout_ms: int = 30_000) -> Any:
        """The element once it is there; on a timeout, the page's status line and console."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        locator = self.page.locator(selector)
        try:
            locator.first.wait_for(timeout=timeout_ms)
        except PlaywrightTimeout as timeout:
            shown = self.page.locator("#status").inner_text()
            raise AssertionError(
                f"{selector} not shown; status {shown!r}; console {self.messages}"
            ) from timeout
        return locator

    def errors(self) -> list[str]:
        return [m for m in self.messages if m.startswith("error")]

    def screenshot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()
