"""gateway service (DESIGN §4)."""
