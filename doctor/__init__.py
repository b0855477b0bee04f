"""model-doctor: stress-test a causal LM under compression and decoding changes, and diagnose the damage."""

__version__ = "0.1.0"
