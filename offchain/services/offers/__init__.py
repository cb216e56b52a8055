"""offers service (DESIGN §4)."""
