"""orchestration service (DESIGN §4)."""
