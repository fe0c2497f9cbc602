"""Money is integer micro-rupiah (µIDR). No floats anywhere money moves."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

MICROS_PER_IDR = 1_000_000


class AmountError(ValueError):
    """An IDR amount that is not a finite decimal with at most 6 places."""


def idr_to_micros(value: str | int | Decimal) -> int:
    """Parse an IDR amount ("50000", "12.5", 7) into µIDR, exactly."""
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise AmountError(f"not a decimal amount: {value!r}") from exc
    if not amount.is_finite():
        raise AmountError(f"not a finite amount: {value!r}")
    micros = amount * MICROS_PER_IDR
    if micros != micros.to_integral_value():
        raise AmountError(f"more than 6 decimal places: {value!r}")
    return int(micros)


def micros_to_idr(micros: int) -> str:
    """Format µIDR as an exact decimal IDR string without trailing zeros."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICROS_PER_IDR)
    if frac == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:06d}".rstrip("0")


def ceil_div(numerator: int, denominator: int) -> int:
    """Integer ceiling division for non-negative numerators (charges round up)."""
    return -(-numerator // denominator)
