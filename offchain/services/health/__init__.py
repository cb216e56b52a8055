"""health service (DESIGN §4)."""
