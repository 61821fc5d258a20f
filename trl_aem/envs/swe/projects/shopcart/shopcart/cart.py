"""The cart."""

from .pricing import bulk_price, shipping_cost


class Item:
    def __init__(self, name, unit_price, quantity=1):
        if unit_price < 0:
            raise ValueError("unit_price must be >= 0")
        self.name = name
        self.unit_price = unit_price
        self.quantity = quantity

    def line_total(self):
        return bulk_price(self.unit_price, self.quantity)


class Cart:
    def __init__(self):
        self.items = {}
        self.coupon = None

    def add(self, name, unit_price, quantity=1):
        """Add ``quantity`` units; adding an item already in the cart increases its quantity."""
        if quantity <= 0:
            raise ValueError("quantity must be positive")
        if name in self.items:
            self.items[name].quantity += quantity
        else:
            self.items[name] = Item(name, unit_price, quantity)

    def remove(self, name, quantity=None):
        """Remove ``quantity`` units (all when None); the item disappears at zero."""
        if name not in self.items:
            raise KeyError(name)
        item = self.items[name]
        if quantity is None or quantity >= item.quantity:
            del self.items[name]
        else:
            item.quantity -= quantity

    def count(self):
        return sum(item.quantity for item in self.items.values())

    def subtotal(self):
        return round(sum(item.line_total() for item in self.items.values()), 2)

    def apply_coupon(self, coupon):
        if not coupon.applies_to(self.subtotal()):
            return False
        self.coupon = coupon
        return True

    def total(self, express=False):
        subtotal = self.subtotal()
        discount = self.coupon.discount(subtotal) if self.coupon else 0.0
        return round(subtotal - discount + shipping_cost(subtotal - discount, express), 2)

    def most_expensive(self):
        """The name of the item with the highest unit price (the first added on ties), None if empty."""
        best = None
        for item in self.items.values():
            if best is None or item.unit_price > best.unit_price:
                best = item
        return best.name if best else None
