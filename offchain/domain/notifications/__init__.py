"""Notifications domain: webhook signatures, the retry schedule, event envelopes, message templates."""
