"""Adapters to external systems: the SME platform (auth, KYC, payments) and Paystack."""
