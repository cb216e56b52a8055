"""underwriting service (DESIGN §4)."""
