"""skagegender.embedding (being built)."""
