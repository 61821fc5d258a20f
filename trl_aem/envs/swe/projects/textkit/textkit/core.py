"""String helpers: slugs, wrapping, case conversion, simple encodings."""

import re


def slugify(text, sep="-"):
    """Lower-case words of letters and digits joined by ``sep``."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    return sep.join(words)


def truncate(text, limit, ellipsis="..."):
    """``text`` cut to at most ``limit`` characters, ending in ``ellipsis`` when cut."""
    if limit < 0:
        raise ValueError("limit must be >= 0")
    if len(text) <= limit:
        return text
    if limit <= len(ellipsis):
        return ellipsis[:limit]
    return text[: limit - len(ellipsis)] + ellipsis


def wrap(text, width):
    """Greedy word wrap: lines of at most ``width`` characters (longer words get a line of their own)."""
    if width < 1:
        raise ValueError("width must be >= 1")
    lines, current = [], ""
    for word in text.split():
        if not current:
            current = word
        elif len(current) + 1 + len(word) <= width:
            current = current + " " + word
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    return lines


def camel_to_snake(name):
    """``parseHttpResponse`` -> ``parse_http_response``."""
    out = []
    for i, char in enumerate(name):
        if char.isupper() and i > 0 and not name[i - 1].isupper():
            out.append("_")
        out.append(char.lower())
    return "".join(out)


def snake_to_camel(name, upper_first=False):
    """``parse_http_response`` -> ``parseHttpResponse`` (or ``ParseHttpResponse``)."""
    parts = [p for p in name.split("_") if p]
    if not parts:
        return ""
    head = parts[0].capitalize() if upper_first else parts[0].lower()
    return head + "".join(p.capitalize() for p in parts[1:])


def count_words(text, min_length=1):
    """Word frequencies (case-insensitive) of words with at least ``min_length`` letters, most common first."""
    counts = {}
    for word in re.findall(r"[a-z']+", text.lower()):
        if len(word) >= min_length:
            counts[word] = counts.get(word, 0) + 1
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def is_palindrome(text):
    """True when the letters and digits of ``text`` read the same backwards (case-insensitive)."""
    chars = [c.lower() for c in text if c.isalnum()]
    left, right = 0, len(chars) - 1
    while left < right:
        if chars[left] != chars[right]:
            return False
        left += 1
        right -= 1
    return True


def caesar(text, shift):
    """Rotate ASCII letters by ``shift`` places, keeping case; other characters unchanged."""
    out = []
    for char in text:
        if "a" <= char <= "z":
            out.append(chr((ord(char) - ord("a") + shift) % 26 + ord("a")))
        elif "A" <= char <= "Z":
            out.append(chr((ord(char) - ord("A") + shift) % 26 + ord("A")))
        else:
            out.append(char)
    return "".join(out)


def common_prefix(strings):
    """The longest prefix shared by every string ('' for no strings)."""
    if not strings:
        return ""
    prefix = strings[0]
    for s in strings[1:]:
        n = 0
        while n < len(prefix) and n < len(s) and prefix[n] == s[n]:
            n += 1
        prefix = prefix[:n]
    return prefix


def rle_encode(text):
    """Run-length encoding: ``aaab`` -> ``[("a", 3), ("b", 1)]``."""
    runs = []
    for char in text:
        if runs and runs[-1][0] == char:
            runs[-1] = (char, runs[-1][1] + 1)
        else:
            runs.append((char, 1))
    return runs


def rle_decode(runs):
    """Inverse of :func:`rle_encode`."""
    return "".join(char * count for char, count in runs)
