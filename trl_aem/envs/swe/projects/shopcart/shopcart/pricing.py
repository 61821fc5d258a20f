"""Price rules: bulk discounts, coupons, shipping."""

BULK_QUANTITY = 10
BULK_DISCOUNT = 0.1
FREE_SHIPPING_FROM = 50.0
SHIPPING_FEE = 4.99


def bulk_price(unit_price, quantity):
    """Line price; ``BULK_QUANTITY`` or more units get ``BULK_DISCOUNT`` off."""
    if quantity < 0:
        raise ValueError("quantity must be >= 0")
    price = unit_price * quantity
    if quantity >= BULK_QUANTITY:
        price = price * (1 - BULK_DISCOUNT)
    return round(price, 2)


def shipping_cost(subtotal, express=False):
    """Free from ``FREE_SHIPPING_FROM`` (standard only); express costs twice the fee."""
    if express:
        return round(SHIPPING_FEE * 2, 2)
    if subtotal >= FREE_SHIPPING_FROM:
        return 0.0
    return SHIPPING_FEE


class Coupon:
    """``percent`` off (0..100), applicable from ``min_spend``."""

    def __init__(self, code, percent, min_spend=0.0):
        if not 0 < percent <= 100:
            raise ValueError("percent must be in (0, 100]")
        self.code = code
        self.percent = percent
        self.min_spend = min_spend

    def applies_to(self, subtotal):
        return subtotal >= self.min_spend

    def discount(self, subtotal):
        if not self.applies_to(subtotal):
            return 0.0
        return round(subtotal * self.percent / 100, 2)
