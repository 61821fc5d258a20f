"""numkit: small numeric helpers."""

from .ints import binary_search, digit_sum, fibonacci, gcd, is_prime, lcm, primes_below
from .stats import clamp, mean, median, moving_average, percentile, variance

__all__ = [
    "binary_search",
    "clamp",
    "digit_sum",
    "fibonacci",
    "gcd",
    "is_prime",
    "lcm",
    "mean",
    "median",
    "moving_average",
    "percentile",
    "primes_below",
    "variance",
]
