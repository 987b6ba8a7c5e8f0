"""One client per external system, built from settings."""
