"""The README's examples, run as a user runs them."""
