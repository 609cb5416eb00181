"""The platform families propcrm can connect, and how to build a gateway from stored settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from ...adapters.platforms.port import PlatformGateway
from ...adapters.platforms.secrets import Secret


@dataclass(frozen=True)
class Family:
    name: str
    title: str
    settings_type: type
    secrets: tuple[str, ...]
    build: Callable[[Any, dict[str, Secret]], PlatformGateway]
    streams: bool = True  # False: propcrm does not run a stream for it (events arrive another way)


def _mt5_web() -> Family:
    from ...adapters.platforms.mt5.webapi import Mt5WebGateway, Mt5WebSettings

    return Family("mt5-web", "MetaTrader 5 — Web API (HTTPS)", Mt5WebSettings, ("password",),
                  lambda settings, secrets: Mt5WebGateway(settings, secrets))


def _mt5_manager() -> Family:
    from ...adapters.platforms.mt5.bridge_client import BridgeGateway, BridgeSettings

    return Family("mt5-manager", "MetaTrader 5 — Manager API bridge (Windows, MT5Manager)", BridgeSettings,
                  ("bridge_secret",), lambda settings, secrets: BridgeGateway(settings, secrets))


def _matchtrader() -> Family:
    from ...adapters.platforms.matchtrader.brokerapi import MatchTraderGateway, MatchTraderSettings

    return Family("matchtrader", "Match-Trader — Broker API (REST)", MatchTraderSettings, ("api_key",),
                  lambda settings, secrets: MatchTraderGateway(settings, secrets))


_LOADERS: dict[str, Callable[[], Family]] = {"mt5-web": _mt5_web, "mt5-manager": _mt5_manager,
                                             "matchtrader": _matchtrader}


class FamilyError(ValueError):
    """An unknown family or settings it does not accept; the message names the field."""


def family(name: str) -> Family:
    loader = _LOADERS.get(name)
    if loader is None:
        raise FamilyError(f"unknown platform family {name!r}; known: {', '.join(sorted(_LOADERS))}")
    try:
        return loader()
    except ImportError as exc:  # a family not built in this version
        raise FamilyError(f"platform family {name!r} is not available: {exc}") from None


def names() -> list[str]:
    return sorted(_LOADERS)


def parse_settings(name: str, settings: dict[str, Any]) -> Any:
    kind = family(name)
    try:
        return msgspec.convert(settings, kind.settings_type, strict=False)
    except msgspec.ValidationError as exc:
        raise FamilyError(f"{name} settings: {exc}") from None


__all__ = ["Family", "FamilyError", "family", "names", "parse_settings"]
