import unittest

from textkit import (
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


class TestSlugify(unittest.TestCase):
    def test_basic(self):
        self.assertEqual(slugify("Hello, World!"), "hello-world")

    def test_separator(self):
        self.assertEqual(slugify("  A  b 3 ", sep="_"), "a_b_3")

    def test_empty(self):
        self.assertEqual(slugify("!!!"), "")


class TestTruncate(unittest.TestCase):
    def test_short_text_unchanged(self):
        self.assertEqual(truncate("abc", 3), "abc")

    def test_cut_with_ellipsis(self):
        self.assertEqual(truncate("abcdefgh", 6), "abc...")

    def test_tiny_limit(self):
        self.assertEqual(truncate("abcdefgh", 2), "..")

    def test_negative_limit(self):
        with self.assertRaises(ValueError):
            truncate("abc", -1)


class TestWrap(unittest.TestCase):
    def test_wrap(self):
        self.assertEqual(wrap("the quick brown fox jumps", 10), ["the quick", "brown fox", "jumps"])

    def test_exact_width(self):
        self.assertEqual(wrap("ab cd ef", 5), ["ab cd", "ef"])

    def test_long_word(self):
        self.assertEqual(wrap("a extraordinary b", 4), ["a", "extraordinary", "b"])

    def test_bad_width(self):
        with self.assertRaises(ValueError):
            wrap("x", 0)


class TestCase(unittest.TestCase):
    def test_camel_to_snake(self):
        self.assertEqual(camel_to_snake("parseHttpResponse"), "parse_http_response")

    def test_camel_to_snake_acronym(self):
        self.assertEqual(camel_to_snake("HTTPServer"), "httpserver")

    def test_snake_to_camel(self):
        self.assertEqual(snake_to_camel("parse_http_response"), "parseHttpResponse")

    def test_snake_to_camel_upper(self):
        self.assertEqual(snake_to_camel("__make_it__", upper_first=True), "MakeIt")

    def test_snake_to_camel_empty(self):
        self.assertEqual(snake_to_camel("___"), "")


class TestWords(unittest.TestCase):
    def test_count_words(self):
        self.assertEqual(count_words("b a B c b a"), [("b", 3), ("a", 2), ("c", 1)])

    def test_min_length(self):
        self.assertEqual(count_words("a bb ccc bb", min_length=2), [("bb", 2), ("ccc", 1)])

    def test_palindrome(self):
        self.assertTrue(is_palindrome("A man, a plan, a canal: Panama"))
        self.assertTrue(is_palindrome("abba"))

    def test_not_palindrome(self):
        self.assertFalse(is_palindrome("abcda"))
        self.assertFalse(is_palindrome("ab"))

    def test_common_prefix(self):
        self.assertEqual(common_prefix(["interview", "internet", "interval"]), "inter")
        self.assertEqual(common_prefix(["abc", "abd"]), "ab")
        self.assertEqual(common_prefix([]), "")


class TestCiphers(unittest.TestCase):
    def test_caesar(self):
        self.assertEqual(caesar("Hello, Zz!", 3), "Khoor, Cc!")

    def test_caesar_roundtrip(self):
        self.assertEqual(caesar(caesar("Attack at Dawn", 11), -11), "Attack at Dawn")

    def test_rle(self):
        self.assertEqual(rle_encode("aaabcc"), [("a", 3), ("b", 1), ("c", 2)])
        self.assertEqual(rle_decode([("x", 2), ("y", 1)]), "xxy")
        self.assertEqual(rle_decode(rle_encode("zzzzq")), "zzzzq")


if __name__ == "__main__":
    unittest.main()
