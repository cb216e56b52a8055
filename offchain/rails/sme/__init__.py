"""Adapters to the SME platform's services (auth, KYC, payments)."""
