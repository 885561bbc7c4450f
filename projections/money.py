"""Money as answers print it: an amount in its currency's minor units (ISO 4217), one format everywhere."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

_NO_DECIMALS = [
    "BIF",
    "CLP",
    "DJF",
    "GNF",
    "ISK",
    "JPY",
    "KMF",
    "KRW",
    "PYG",
    "RWF",
    "UGX",
    "UYI",
    "VND",
    "VUV",
    "XAF",
    "XOF",
    "XPF",
]
_MINOR_UNITS: Mapping[str, int] = {
    **dict.fromkeys(_NO_DECIMALS, 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
    **dict.fromkeys(("CLF", "UYW"), 4),
}
"""ISO 4217's currencies whose minor unit is not a hundredth; every other code has two decimals."""


def minor_units(currency: str) -> int:
    """The decimals of ``currency``'s minor unit: 2 for EUR, 0 for JPY, 3 for KWD."""
    return _MINOR_UNITS.get(currency, 2)


def in_minor_units(amount: Decimal, currency: str) -> Decimal:
    """``amount`` rounded half-even to ``currency``'s minor unit; it prints (and encodes) as ``4000.00`` for EUR,
    ``4000`` for JPY, never ``4000.0`` or ``4E+3``."""
    # Sums of many large amounts may have more digits than the default context's 28: quantize would refuse them.
    with localcontext(prec=60):
        return amount.quantize(Decimal(1).scaleb(-minor_units(currency)), rounding=ROUND_HALF_EVEN)


def money_text(amount: Decimal, currency: str) -> str:
    """The amount as answers show it: a string in the currency's minor units."""
    return str(in_minor_units(amount, currency))


def per_currency(amounts: Mapping[str, Decimal]) -> dict[str, Decimal]:
    """Amounts keyed by currency, each in its currency's minor units."""
    return {currency: in_minor_units(amount, currency) for currency, amount in amounts.items()}
