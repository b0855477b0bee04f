"""Evaluation and calibration texts: bundled corpora, windows and calibration samples."""
