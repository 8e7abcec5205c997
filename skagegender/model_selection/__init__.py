"""Model selection: subject-disjoint splits and head search."""

from ._search import HeadSearchCV, StudyError, default_head_space
from ._splits import dataset_cv

__all__ = ["HeadSearchCV", "StudyError", "dataset_cv", "default_head_space"]
