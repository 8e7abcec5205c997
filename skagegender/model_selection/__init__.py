"""skagegender.model_selection (being built)."""
