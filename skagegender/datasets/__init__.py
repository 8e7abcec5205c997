"""Loaders for the age and gender datasets, each from its official local layout.

Every loader reads a dataset that is already on disk (nothing is downloaded)
and returns the same kind of :class:`sklearn.utils.Bunch`: absolute image
``paths``, ``age`` (float, NaN where unknown), ``gender`` (``"female"``,
``"male"`` or None), ``subject`` ids where the dataset has them, the official
``fold`` where there is one, ``race``, ``age_group`` (Adience), a pandas
``frame`` when pandas is installed, and ``n_dropped`` / ``dropped``: how many
entries of the release were left out, and why. A folder without the expected
layout raises :class:`DatasetLayoutError`, whose message names that layout.

The registry names them: :data:`DATASETS`, :func:`load_dataset` (a loader by
name), :func:`subsample` (a seeded subset) and :func:`embed_dataset` (load and embed,
for training, evaluation and tuning).

Use :func:`skagegender.model_selection.dataset_cv` to split a loaded dataset
so that no person is on both sides.
"""

from ._adience import ADIENCE_AGE_GROUPS, adience_age_group, load_adience
from ._base import DatasetLayoutError
from ._fgnet import load_fgnet
from ._imdb_wiki import load_imdb_wiki
from ._morph2 import MORPH2_COLUMNS, load_morph2
from ._registry import DATASETS, embed_dataset, load_dataset, subsample
from ._utkface import UTKFACE_RACES, load_utkface

__all__ = [
    "ADIENCE_AGE_GROUPS",
    "DATASETS",
    "MORPH2_COLUMNS",
    "UTKFACE_RACES",
    "DatasetLayoutError",
    "adience_age_group",
    "embed_dataset",
    "load_adience",
    "load_dataset",
    "load_fgnet",
    "load_imdb_wiki",
    "load_morph2",
    "load_utkface",
    "subsample",
]
