"""Escape suite: each attack of issue 9 run for real against a container, asserted to fail."""
