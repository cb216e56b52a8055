"""repayment service (DESIGN §4)."""
