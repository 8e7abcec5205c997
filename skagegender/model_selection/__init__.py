"""Model selection: subject-disjoint splits and head search."""

from ._search import HeadSearchCV, default_head_space

__all__ = ["HeadSearchCV", "default_head_space"]
