"""Kaldi-style data directories: corpus preparation and validation."""
