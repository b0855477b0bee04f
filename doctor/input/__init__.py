"""What a user supplies, checked before the expensive step: size limits, safe regexes, preflight."""
