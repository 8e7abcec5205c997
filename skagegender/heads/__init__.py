"""skagegender.heads (being built)."""
