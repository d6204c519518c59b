"""Real, local stand-ins for the providers Touchpoint talks to, for tests."""
