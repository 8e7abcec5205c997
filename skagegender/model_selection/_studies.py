"""Reading the result of a finished head search back from its Optuna storage."""

from ._storage import _ATTR_SEARCH, _import_optuna, open_storage


def study_names(url):
    """Names of the studies stored in the Optuna storage at ``url``.

    Parameters
    ----------
    url : str
        A database URL, as for :func:`open_storage`.

    Returns
    -------
    names : list of str
    """
    optuna = _import_optuna()
    return optuna.get_all_study_names(storage=open_storage(url))


def best_head_params(url, name):
    """Target and best trial parameters of the head search ``name`` stored at ``url``.

    Parameters
    ----------
    url : str
        A database URL, as for :func:`open_storage`.
    name : str
        The study's name.

    Returns
    -------
    target : {"age", "gender"}
        The head the search tuned.
    params : dict
        Optuna's parameters of the best trial, for :func:`default_head_space` of
        ``target`` replayed through ``optuna.trial.FixedTrial``.

    Raises
    ------
    ValueError
        If there is no such study, it was not made by :class:`HeadSearchCV` over an
        ``AgeRegressor`` or ``GenderClassifier``, or it has no finished trial.
    """
    optuna = _import_optuna()
    try:
        study = optuna.load_study(study_name=name, storage=open_storage(url))
    except KeyError:
        raise ValueError(f"no study named {name!r}; it has {study_names(url)} "
                         "(choose one with --study-name)") from None
    estimator = str((study.user_attrs.get(_ATTR_SEARCH) or {}).get("estimator", ""))
    target = ("age" if estimator.startswith("AgeRegressor")
              else "gender" if estimator.startswith("GenderClassifier") else None)
    if target is None:
        raise ValueError(f"the study {name!r} was not made by 'skagegender tune' (it "
                         "searches no AgeRegressor or GenderClassifier)")
    try:
        best = study.best_trial
    except ValueError:
        raise ValueError(f"the study {name!r} has no finished trial") from None
    return target, best.params
