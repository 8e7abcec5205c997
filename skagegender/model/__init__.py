"""skagegender.model (being built)."""
