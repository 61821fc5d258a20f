"""Descriptive statistics on lists of numbers."""


def mean(values):
    if not values:
        raise ValueError("mean of no values")
    return sum(values) / len(values)


def median(values):
    if not values:
        raise ValueError("median of no values")
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2 == 1:
        return ordered[mid]
    return (ordered[mid - 1] + ordered[mid]) / 2


def variance(values, sample=False):
    """Population variance, or the sample variance (divided by n - 1) when ``sample``."""
    n = len(values)
    if n < 2 and sample:
        raise ValueError("sample variance needs at least two values")
    m = mean(values)
    total = sum((v - m) ** 2 for v in values)
    return total / (n - 1) if sample else total / n


def clamp(value, low, high):
    if low > high:
        raise ValueError("low must not exceed high")
    if value < low:
        return low
    if value > high:
        return high
    return value


def moving_average(values, window):
    """Means of each run of ``window`` consecutive values."""
    if window < 1:
        raise ValueError("window must be >= 1")
    out = []
    for start in range(len(values) - window + 1):
        out.append(sum(values[start : start + window]) / window)
    return out


def percentile(values, q):
    """The ``q``-th percentile (0..100) with linear interpolation between closest ranks."""
    if not 0 <= q <= 100:
        raise ValueError("q must be between 0 and 100")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    fraction = position - low
    return ordered[low] + (ordered[high] - ordered[low]) * fraction
