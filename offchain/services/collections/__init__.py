"""collections service (DESIGN §4)."""
