"""analytics service (DESIGN §4)."""
