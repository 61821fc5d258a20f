"""The SWE sandbox against untrusted commands."""
