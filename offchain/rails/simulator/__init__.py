"""A local stand-in for the SME platform and Paystack, faithful to their wire formats (DESIGN §4)."""
