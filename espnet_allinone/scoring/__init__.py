"""Scoring: WER (NIST sclite, or jiwer), MAPSSWE significance test."""
