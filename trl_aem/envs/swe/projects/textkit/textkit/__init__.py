"""textkit: small text utilities."""

from .core import (
    caesar,
    camel_to_snake,
    common_prefix,
    count_words,
    is_palindrome,
    rle_decode,
    rle_encode,
    slugify,
    snake_to_camel,
    truncate,
    wrap,
)

__all__ = [
    "caesar",
    "camel_to_snake",
    "common_prefix",
    "count_words",
    "is_palindrome",
    "rle_decode",
    "rle_encode",
    "slugify",
    "snake_to_camel",
    "truncate",
    "wrap",
]
