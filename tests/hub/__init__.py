"""The Hub side: model cards, resilient pushes against a loopback Hub server, the trainer's Hub behaviour."""
