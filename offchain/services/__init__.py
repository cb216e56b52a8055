"""The eleven CaaS services (DESIGN §4), one ASGI app each: offchain.services.<name>.app:create_app."""
