"""Model selection: subject-disjoint splits and head search."""

from ._search import HeadSearchCV, default_head_space
from ._splits import dataset_cv

__all__ = ["HeadSearchCV", "dataset_cv", "default_head_space"]
