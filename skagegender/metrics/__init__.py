"""skagegender.metrics (being built)."""
