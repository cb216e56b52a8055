"""disbursement service (DESIGN §4)."""
