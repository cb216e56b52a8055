"""ledger service (DESIGN §4)."""
