"""notifications service (DESIGN §4)."""
