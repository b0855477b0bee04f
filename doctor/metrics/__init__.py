"""Metrics computed from an evaluation pass or from the model, each a `Measurement` with an interval."""
