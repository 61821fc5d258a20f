import unittest

from shopcart import Coupon, bulk_price, shipping_cost


class TestBulk(unittest.TestCase):
    def test_regular(self):
        self.assertEqual(bulk_price(2.5, 4), 10.0)

    def test_bulk_threshold(self):
        self.assertEqual(bulk_price(1.0, 9), 9.0)
        self.assertEqual(bulk_price(1.0, 10), 9.0)
        self.assertEqual(bulk_price(2.0, 20), 36.0)

    def test_negative_quantity(self):
        with self.assertRaises(ValueError):
            bulk_price(1.0, -1)


class TestShipping(unittest.TestCase):
    def test_standard(self):
        self.assertEqual(shipping_cost(10.0), 4.99)

    def test_free_from_threshold(self):
        self.assertEqual(shipping_cost(50.0), 0.0)
        self.assertEqual(shipping_cost(49.99), 4.99)

    def test_express(self):
        self.assertEqual(shipping_cost(100.0, express=True), 9.98)


class TestCoupon(unittest.TestCase):
    def test_discount(self):
        self.assertEqual(Coupon("TEN", 10).discount(80.0), 8.0)

    def test_min_spend(self):
        coupon = Coupon("BIG", 20, min_spend=100.0)
        self.assertEqual(coupon.discount(99.0), 0.0)
        self.assertEqual(coupon.discount(100.0), 20.0)

    def test_invalid_percent(self):
        with self.assertRaises(ValueError):
            Coupon("X", 0)
        with self.assertRaises(ValueError):
            Coupon("X", 101)
        self.assertEqual(Coupon("ALL", 100).percent, 100)


if __name__ == "__main__":
    unittest.main()
