"""The payments service's settings: config/payments.yaml for the rails, fees,
limits and receipt; the environment for secrets and addresses.

Environment:
    AIPORT_PAYMENTS_CONFIG          the YAML (default config/payments.yaml)
    AIPORT_PAYMENTS_GATEWAYS        which gateways are on, e.g. "midtrans,xendit"
                                    (default: every gateway whose keys are set)
    AIPORT_MIDTRANS_SNAP_URL, AIPORT_MIDTRANS_API_URL, AIPORT_MIDTRANS_SERVER_KEY
    AIPORT_XENDIT_API_URL, AIPORT_XENDIT_SECRET_KEY, AIPORT_XENDIT_CALLBACK_TOKEN
    AIPORT_PUBLIC_URL               where people come back to (/dashboard/topup/<id>)
    AIPORT_PAYMENTS_NOTIFICATION_URL  the public base of /webhooks/* (default: AIPORT_PUBLIC_URL)
    AIPORT_PAYMENTS_HTTP_ADDR       the webhook listener (default 127.0.0.1:9330)
    AIPORT_PAYMENTS_SWEEP_SECONDS   how often unsettled orders are looked at again (default 15)
    AIPORT_PAYMENTS_RECHECK_SECONDS how long an open order waits for news before the
                                    gateway is asked (default 60): a lost notification
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from services.common import settings

from .rules import MICROS, Fee, Limits

GATEWAYS = ("midtrans", "xendit")
MAX_PPN_PERCENT = Decimal(50)


@dataclass(frozen=True)
class GatewaySettings:
    name: str
    fee: Fee
    # midtrans: snap, api; xendit: api.
    urls: dict[str, str]
    # midtrans: server_key; xendit: secret_key, callback_token. Never logged.
    secrets: dict[str, str] = field(repr=False)
    methods: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReceiptSettings:
    company_name: str
    address: str
    email: str
    npwp: str
    ppn_rate_bp: int


@dataclass(frozen=True)
class PaymentsConfig:
    limits: Limits
    default_gateway: str
    expiry_minutes: int
    gateways: dict[str, GatewaySettings]
    receipt: ReceiptSettings
    public_url: str
    notification_url: str


def _url(name: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{name} must be an http(s) URL, got {value!r}")
    return value.rstrip("/")


def _percent(name: str, value: Any, high: Decimal) -> Decimal:
    try:
        pct = Decimal(str(value))
    except InvalidOperation as exc:
        raise ValueError(f"{name} must be a decimal percent") from exc
    if not pct.is_finite() or not 0 <= pct <= high:
        raise ValueError(f"{name} must be between 0 and {high}")
    return pct


def _gateway(name: str, raw: dict[str, Any], environ: dict[str, str]) -> GatewaySettings | None:
    """None when the gateway's keys are not in the environment (it is off)."""
    fee = Fee(
        int(raw.get("fee_idr", 0)),
        _percent(f"{name}.fee_percent", raw.get("fee_percent", "0"), Decimal(20)),
    )
    if fee.fixed_idr < 0:
        raise ValueError(f"{name}.fee_idr must not be negative")
    if name == "midtrans":
        secret_envs = {"server_key": raw["server_key_env"]}
        url_envs = {"snap": raw["snap_url_env"], "api": raw["api_url_env"]}
        methods = tuple(raw.get("enabled_payments", ()))
    else:
        secret_envs = {
            "secret_key": raw["secret_key_env"],
            "callback_token": raw["callback_token_env"],
        }
        url_envs = {"api": raw["api_url_env"]}
        methods = tuple(raw.get("payment_methods", ()))
    secrets = {k: environ.get(env, "") for k, env in secret_envs.items()}
    if not all(secrets.values()):
        return None
    urls = {}
    for k, env in url_envs.items():
        if not environ.get(env):
            raise ValueError(f"{env} must be set when {name}'s keys are")
        urls[k] = _url(env, environ[env])
    return GatewaySettings(name, fee, urls, secrets, methods)


def load(environ: dict[str, str] | None = None, path: Path | None = None) -> PaymentsConfig:
    env = dict(os.environ if environ is None else environ)
    path = path or Path(
        env.get("AIPORT_PAYMENTS_CONFIG", settings.PROJECT_ROOT / "config" / "payments.yaml")
    )
    with open(path, encoding="utf-8") as fh:
        raw = yaml.safe_load(fh)
    topup = raw["topup"]
    limits = Limits(int(topup["minimum_idr"]) * MICROS, int(topup["maximum_idr"]) * MICROS)
    if not 0 < limits.minimum_micros <= limits.maximum_micros:
        raise ValueError("topup.minimum_idr must be positive and at most maximum_idr")
    wanted = [g.strip() for g in env.get("AIPORT_PAYMENTS_GATEWAYS", "").split(",") if g.strip()]
    for name in wanted:
        if name not in GATEWAYS:
            raise ValueError(f"AIPORT_PAYMENTS_GATEWAYS: unknown gateway {name!r}")
    gateways: dict[str, GatewaySettings] = {}
    for name in GATEWAYS:
        if wanted and name not in wanted:
            continue
        gateway = _gateway(name, raw["gateways"][name], env)
        if gateway is None and name in wanted:
            raise ValueError(f"{name} is enabled but its keys are not set")
        if gateway is not None:
            gateways[name] = gateway
    default = str(topup.get("default_gateway", "midtrans"))
    if gateways and default not in gateways:
        default = next(iter(gateways))
    receipt = raw["receipt"]
    ppn = _percent("receipt.ppn_percent", receipt.get("ppn_percent", "0"), MAX_PPN_PERCENT)
    public_url = _url("AIPORT_PUBLIC_URL", env.get("AIPORT_PUBLIC_URL", "http://127.0.0.1:8080"))
    return PaymentsConfig(
        limits=limits,
        default_gateway=default,
        expiry_minutes=max(1, min(int(topup.get("expiry_minutes", 60)), 7 * 24 * 60)),
        gateways=gateways,
        receipt=ReceiptSettings(
            company_name=str(receipt["company_name"]),
            address=str(receipt.get("address", "")),
            email=str(receipt.get("email", "")),
            npwp=str(receipt.get("npwp", "")),
            ppn_rate_bp=int(ppn * 100),
        ),
        public_url=public_url,
        notification_url=_url(
            "AIPORT_PAYMENTS_NOTIFICATION_URL",
            env.get("AIPORT_PAYMENTS_NOTIFICATION_URL", public_url),
        ),
    )


def http_addr() -> str:
    return settings.env("AIPORT_PAYMENTS_HTTP_ADDR", "127.0.0.1:9330")


def recheck_seconds() -> int:
    return max(1, min(settings.env_int("AIPORT_PAYMENTS_RECHECK_SECONDS", 60), 86_400))


def sweep_seconds() -> float:
    return float(max(1, min(settings.env_int("AIPORT_PAYMENTS_SWEEP_SECONDS", 15), 3600)))
