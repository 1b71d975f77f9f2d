"""Money as Stripe counts it: integer minor units, with the currency's own number of decimals
(Stripe docs, "Zero-decimal currencies" and "Three-decimal currencies")."""

from __future__ import annotations

from collections.abc import Mapping

# Stripe's zero-decimal and three-decimal currencies: amounts are in whole units, or thousandths.
# https://docs.stripe.com/currencies#zero-decimal, https://docs.stripe.com/currencies#three-decimal
ZERO_DECIMAL_CURRENCIES = frozenset(
    {
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    }
)
THREE_DECIMAL_CURRENCIES = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})


def decimals(currency: str) -> int:
    code = currency.lower()
    return 0 if code in ZERO_DECIMAL_CURRENCIES else 3 if code in THREE_DECIMAL_CURRENCIES else 2


def minor_units_per_major(currency: str) -> int:
    """100 for usd, 1 for jpy, 1000 for kwd."""
    return 10 ** decimals(currency)


def format_money(amount: int | None, currency: str | None) -> str:
    """'USD 149.00' from (14900, 'usd'); zero-decimal currencies are not divided."""
    code = (currency or "???").upper()
    if amount is None:
        return f"{code} (no amount)"
    digits = decimals(code)
    whole, part = divmod(abs(int(amount)), 10**digits)
    sign = "-" if amount < 0 else ""
    return f"{code} {sign}{whole:,}" + (f".{part:0{digits}d}" if digits else "")


def format_amounts(per_currency: Mapping[str, int], *, none: str = "") -> str:
    """'EUR 12.00, USD 347.00' from {currency: minor units}, currencies in order; `none` when empty."""
    return ", ".join(format_money(int(a), c) for c, a in sorted(per_currency.items())) or none
