"""Rupiah for people, the Indonesian way: `Rp 1.250.000`, `Rp 0,35`.

Dots group thousands and a comma starts the decimals. Whole amounts show no
decimals; an amount with a fraction shows at least two places (sen, as a
price is written) and as many more as it really has, up to the µIDR (six), so
a price of Rp 0,000125 per token is never rounded to look free.

Input is exact: integer micro-rupiah, or the decimal IDR strings of the API
("4500", "0.35"). Floats are refused, never rounded.
"""

from __future__ import annotations

from services.common.money import MICROS_PER_IDR, idr_to_micros

THOUSANDS = "."
DECIMAL = ","
MIN_DECIMALS = 2


def format_micros(micros: int) -> str:
    """µIDR -> `Rp 1.250.000`, `Rp 0,35`, `Rp 1.234,50`, `-Rp 2.500`."""
    # bool is an int, and a float would hide rounding: both are refused.
    if isinstance(micros, bool) or not isinstance(micros, int):
        raise TypeError(f"micro-rupiah must be an int, not {type(micros).__name__}")
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICROS_PER_IDR)
    text = f"{sign}Rp {_group(whole)}"
    if frac:
        digits = f"{frac:06d}".rstrip("0").ljust(MIN_DECIMALS, "0")
        text += DECIMAL + digits
    return text


def format_idr(amount: str) -> str:
    """An exact decimal IDR string ("4500", "0.35", as `GET /v1/pricing` sends
    them) -> `Rp 4.500`, `Rp 0,35`. More than six decimal places is an error."""
    if not isinstance(amount, str):
        raise TypeError(f"an IDR amount must be a decimal string, not {type(amount).__name__}")
    return format_micros(idr_to_micros(amount))


def _group(whole: int) -> str:
    return f"{whole:,}".replace(",", THOUSANDS)
