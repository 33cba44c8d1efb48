"""Scoring of decoding output and collection of results."""
