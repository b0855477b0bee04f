"""Built-in metric groups, one module each, every one declaring `GROUP = MetricGroup(...)`."""
