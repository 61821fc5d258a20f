"""Model cards, Hub pushes against a loopback Hub server, and the trl-aem command line."""
