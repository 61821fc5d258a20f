import unittest

from numkit import clamp, mean, median, moving_average, percentile, variance


class TestCentral(unittest.TestCase):
    def test_mean(self):
        self.assertEqual(mean([1, 2, 3, 4]), 2.5)

    def test_mean_empty(self):
        with self.assertRaises(ValueError):
            mean([])

    def test_median_odd(self):
        self.assertEqual(median([5, 1, 3]), 3)

    def test_median_even(self):
        self.assertEqual(median([4, 1, 3, 2]), 2.5)


class TestSpread(unittest.TestCase):
    def test_population_variance(self):
        self.assertAlmostEqual(variance([2, 4, 4, 4, 5, 5, 7, 9]), 4.0)

    def test_sample_variance(self):
        self.assertAlmostEqual(variance([1, 2, 3, 4], sample=True), 5 / 3)

    def test_sample_variance_needs_two(self):
        with self.assertRaises(ValueError):
            variance([1], sample=True)

    def test_percentile(self):
        self.assertEqual(percentile([1, 2, 3, 4, 5], 50), 3)
        self.assertEqual(percentile([10, 20, 30, 40], 100), 40)
        self.assertAlmostEqual(percentile([10, 20, 30, 40], 25), 17.5)

    def test_percentile_range(self):
        with self.assertRaises(ValueError):
            percentile([1, 2], 101)


class TestHelpers(unittest.TestCase):
    def test_clamp(self):
        self.assertEqual(clamp(5, 0, 10), 5)
        self.assertEqual(clamp(-3, 0, 10), 0)
        self.assertEqual(clamp(12, 0, 10), 10)

    def test_clamp_bounds(self):
        self.assertEqual(clamp(0, 0, 0), 0)
        with self.assertRaises(ValueError):
            clamp(1, 2, 1)

    def test_moving_average(self):
        self.assertEqual(moving_average([1, 2, 3, 4, 5], 2), [1.5, 2.5, 3.5, 4.5])
        self.assertEqual(moving_average([1, 2, 3], 3), [2.0])

    def test_moving_average_window(self):
        with self.assertRaises(ValueError):
            moving_average([1], 0)


if __name__ == "__main__":
    unittest.main()
