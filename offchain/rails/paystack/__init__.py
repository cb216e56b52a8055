"""Paystack adapter: the REST client (transfers, verification, dedicated accounts) and webhooks."""
