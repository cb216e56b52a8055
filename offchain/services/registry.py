"""The port map of DESIGN §4, as the services import it (the data lives in the platform,
`offchain.platform.service_map`; building every app is `offchain.stack.composition`)."""

from offchain.platform.service_map import SERVICES

__all__ = ["SERVICES"]
