"""Model selection: subject-disjoint splits and head search."""

from ._search import HeadSearchCV
from ._space import default_head_space
from ._splits import dataset_cv
from ._storage import StudyError, open_storage, redact_storage_url
from ._studies import best_head_params, study_names
from ._trials import check_study_trials

__all__ = [
    "HeadSearchCV",
    "StudyError",
    "best_head_params",
    "check_study_trials",
    "dataset_cv",
    "default_head_space",
    "open_storage",
    "redact_storage_url",
    "study_names",
]
