"""Pydantic specs of suites, checkups and modifications, and their YAML loading."""
