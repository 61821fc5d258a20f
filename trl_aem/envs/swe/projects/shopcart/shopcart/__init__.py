"""shopcart: a shopping cart with discounts, coupons and shipping."""

from .cart import Cart, Item
from .pricing import Coupon, bulk_price, shipping_cost

__all__ = ["Cart", "Coupon", "Item", "bulk_price", "shipping_cost"]
