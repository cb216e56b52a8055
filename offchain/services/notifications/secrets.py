"""Webhook signing secrets at rest: Fernet (AES-128-CBC + HMAC) under keys from settings.

Each configured key (any string) becomes a Fernet key through SHA-256; the first key encrypts and
every key decrypts (MultiFernet), so a key is rotated by prepending the new one and re-encrypting
at leisure. The plain secret is only ever shown to the partner once, when created or rotated.
"""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache

from cryptography.fernet import Fernet, MultiFernet

from offchain.platform.settings import NotificationsSettings


class SecretBox:
    def __init__(self, keys: tuple[str, ...]) -> None:
        if not keys:
            raise ValueError("at least one webhook secret key is needed (WEBHOOK_SECRET_KEYS)")
        self._fernet = MultiFernet([Fernet(_fernet_key(key)) for key in keys])

    def encrypt(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode()).decode()

    def decrypt(self, token: str) -> str:
        return self._fernet.decrypt(token.encode()).decode()


def _fernet_key(key: str) -> bytes:
    return base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest())


@lru_cache(maxsize=8)
def _box(keys: tuple[str, ...]) -> SecretBox:
    return SecretBox(keys)


def secret_box(settings: NotificationsSettings) -> SecretBox:
    return _box(tuple(key.get_secret_value() for key in settings.secret_keys))
