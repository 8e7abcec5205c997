"""skagegender.datasets (being built)."""
