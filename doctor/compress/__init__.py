"""Compression algorithms: pure math on weights and calibration statistics, no YAML or CLI."""
