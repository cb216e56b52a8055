"""The SME auth service's JWKS, as the rails see it: the client itself lives in the platform
(`offchain.platform.jwks`), since every service verifies partner tokens with it."""

from offchain.platform.jwks import (
    DEFAULT_TIMEOUT,
    JWKS_PATH,
    JwksClient,
    JwksUnavailable,
    SigningKeyNotFound,
    jwks_url,
)

__all__ = ["DEFAULT_TIMEOUT", "JWKS_PATH", "JwksClient", "JwksUnavailable", "SigningKeyNotFound", "jwks_url"]
