"""Browser consoles for committee signers, auditors and operators, served by the gateway at /console.

The pages are static documents: they carry no data and no identity. Everything they show comes
from the chain (read in the browser through the configured RPC URL) or from the gateway's existing
APIs, called by the page with the identity the user pasted (a partner or operator bearer token,
kept in the tab's sessionStorage). So a console can do exactly what that identity may do through
the same access guard, and no cookie exists for a cross-site request to ride on (no CSRF surface).
See docs/CONSOLES.md.
"""

from offchain.services.gateway.console.routes import install

__all__ = ["install"]
