"""skagegender.pretrained (being built)."""
