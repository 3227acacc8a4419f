"""Data: the embedded synthetic-speech corpus."""
