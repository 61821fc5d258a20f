import unittest

from shopcart import Cart, Coupon, Item


class TestItems(unittest.TestCase):
    def test_negative_price(self):
        with self.assertRaises(ValueError):
            Item("x", -1.0)

    def test_line_total(self):
        self.assertEqual(Item("pen", 1.5, 3).line_total(), 4.5)


class TestCart(unittest.TestCase):
    def setUp(self):
        self.cart = Cart()
        self.cart.add("book", 12.0)
        self.cart.add("pen", 1.5, 4)

    def test_count_and_subtotal(self):
        self.assertEqual(self.cart.count(), 5)
        self.assertEqual(self.cart.subtotal(), 18.0)

    def test_add_existing_increases_quantity(self):
        self.cart.add("pen", 1.5, 2)
        self.assertEqual(self.cart.items["pen"].quantity, 6)
        self.assertEqual(len(self.cart.items), 2)

    def test_add_rejects_zero(self):
        with self.assertRaises(ValueError):
            self.cart.add("x", 1.0, 0)

    def test_remove_some(self):
        self.cart.remove("pen", 3)
        self.assertEqual(self.cart.items["pen"].quantity, 1)

    def test_remove_all(self):
        self.cart.remove("pen", 4)
        self.assertNotIn("pen", self.cart.items)
        self.cart.remove("book")
        self.assertEqual(self.cart.count(), 0)

    def test_remove_missing(self):
        with self.assertRaises(KeyError):
            self.cart.remove("lamp")

    def test_total_with_shipping(self):
        self.assertEqual(self.cart.total(), 22.99)

    def test_total_free_shipping(self):
        self.cart.add("lamp", 40.0)
        self.assertEqual(self.cart.total(), 58.0)

    def test_bulk_in_cart(self):
        cart = Cart()
        cart.add("clip", 1.0, 10)
        self.assertEqual(cart.subtotal(), 9.0)

    def test_coupon(self):
        cart = Cart()
        cart.add("desk", 200.0)
        self.assertTrue(cart.apply_coupon(Coupon("TEN", 10, min_spend=100.0)))
        self.assertEqual(cart.total(), 180.0)

    def test_coupon_refused(self):
        self.assertFalse(self.cart.apply_coupon(Coupon("TEN", 10, min_spend=100.0)))
        self.assertIsNone(self.cart.coupon)

    def test_express_total(self):
        self.assertEqual(self.cart.total(express=True), 27.98)

    def test_most_expensive(self):
        self.cart.add("ink", 12.0)
        self.assertEqual(self.cart.most_expensive(), "book")
        self.assertIsNone(Cart().most_expensive())


if __name__ == "__main__":
    unittest.main()
