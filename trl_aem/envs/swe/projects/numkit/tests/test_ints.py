import unittest

from numkit import binary_search, digit_sum, fibonacci, gcd, is_prime, lcm, primes_below


class TestDivisors(unittest.TestCase):
    def test_gcd(self):
        self.assertEqual(gcd(12, 18), 6)
        self.assertEqual(gcd(-4, 6), 2)
        self.assertEqual(gcd(7, 0), 7)

    def test_lcm(self):
        self.assertEqual(lcm(4, 6), 12)
        self.assertEqual(lcm(0, 5), 0)
        self.assertEqual(lcm(-3, 5), 15)


class TestPrimes(unittest.TestCase):
    def test_is_prime(self):
        self.assertEqual([n for n in range(20) if is_prime(n)], [2, 3, 5, 7, 11, 13, 17, 19])

    def test_squares_are_not_prime(self):
        self.assertFalse(is_prime(9))
        self.assertFalse(is_prime(49))

    def test_primes_below(self):
        self.assertEqual(primes_below(30), [2, 3, 5, 7, 11, 13, 17, 19, 23, 29])
        self.assertEqual(primes_below(2), [])
        self.assertEqual(primes_below(3), [2])


class TestSearch(unittest.TestCase):
    def test_found(self):
        items = [1, 3, 5, 7, 9, 11]
        self.assertEqual([binary_search(items, x) for x in items], [0, 1, 2, 3, 4, 5])

    def test_missing(self):
        self.assertEqual(binary_search([1, 3, 5], 4), -1)
        self.assertEqual(binary_search([], 1), -1)


class TestSequences(unittest.TestCase):
    def test_digit_sum(self):
        self.assertEqual(digit_sum(1234), 10)
        self.assertEqual(digit_sum(-95), 14)
        self.assertEqual(digit_sum(0b1011, base=2), 3)

    def test_fibonacci(self):
        self.assertEqual(fibonacci(8), [0, 1, 1, 2, 3, 5, 8, 13])
        self.assertEqual(fibonacci(0), [])


if __name__ == "__main__":
    unittest.main()
