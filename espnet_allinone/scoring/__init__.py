"""Scoring: WER and reports."""
