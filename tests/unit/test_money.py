"""Money as every answer prints it: a string in the currency's minor units."""

from __future__ import annotations

from decimal import Decimal

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from events.types import MAX_AMOUNT
from projections.money import in_minor_units, minor_units, money_text, per_currency


def test_amounts_print_in_the_currencys_minor_units() -> None:
    # The board printed 4000.0 beside 7200.000: one format, whatever scale the amount was stored or summed with.
    assert money_text(Decimal("4000.0"), "EUR") == "4000.00"
    assert money_text(Decimal("7200.000"), "EUR") == "7200.00"
    assert money_text(Decimal("4000"), "JPY") == "4000"
    assert money_text(Decimal("4000.5"), "JPY") == "4000"  # half-even
    assert money_text(Decimal("1.2345"), "KWD") == "1.234"
    assert money_text(Decimal("1E+3"), "USD") == "1000.00"
    assert money_text(Decimal("0.015"), "EUR") == "0.02"
    assert (minor_units("EUR"), minor_units("JPY"), minor_units("BHD"), minor_units("CLF")) == (2, 0, 3, 4)


def test_answers_encode_amounts_as_those_strings() -> None:
    encoded = msgspec.json.decode(msgspec.json.encode(per_currency({"EUR": Decimal("4000.0"), "JPY": Decimal(7200)})))
    assert encoded == {"EUR": "4000.00", "JPY": "7200"}


@given(
    st.decimals(min_value=0, max_value=MAX_AMOUNT * 1000, allow_nan=False, allow_infinity=False),
    st.sampled_from(["EUR", "JPY", "KWD", "USD", "CLF"]),
)
def test_any_amount_has_exactly_the_minor_units_and_moves_by_less_than_half_of_one(
    amount: Decimal, currency: str
) -> None:
    text = money_text(amount, currency)
    decimals = minor_units(currency)
    whole, _, fraction = text.partition(".")
    assert whole.isdigit() and len(fraction) == decimals and ("." in text) == (decimals > 0)
    assert abs(Decimal(text) - amount) <= Decimal(1).scaleb(-decimals) / 2
    assert in_minor_units(amount, currency) == Decimal(text)
