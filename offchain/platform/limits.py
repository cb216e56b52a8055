"""The partner routes' dependency: a permission, counted against the partner's quota."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from offchain.platform import auth


def limited(permission: str, route_class: str) -> Callable[..., Any]:
    """Dependency: the partner principal holding `permission`, counted against its partner's
    quota in `route_class` (auth.require, which every partner route goes through)."""
    return auth.require(permission, route_class=route_class)
