"""Search spaces of :class:`HeadSearchCV`: Optuna distributions or a callable, and
:func:`default_head_space` over the head families.
"""


from ._storage import _import_optuna


def _suggest(trial, name, distribution):
    """Ask ``trial`` for ``name`` drawn from an Optuna distribution."""
    optuna = _import_optuna()
    dists = optuna.distributions
    if isinstance(distribution, dists.FloatDistribution):
        return trial.suggest_float(
            name, distribution.low, distribution.high, log=distribution.log, step=distribution.step
        )
    if isinstance(distribution, dists.IntDistribution):
        return trial.suggest_int(
            name, distribution.low, distribution.high, log=distribution.log, step=distribution.step
        )
    if isinstance(distribution, dists.CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    raise TypeError(
        f"search_space[{name!r}] must be an optuna FloatDistribution, IntDistribution or "
        f"CategoricalDistribution, got {distribution!r}"
    )


def _sample_params(search_space, trial):
    """Estimator parameters for ``trial``: the search space evaluated on it."""
    if callable(search_space):
        params = search_space(trial)
        if not isinstance(params, dict):
            raise TypeError(
                f"search_space(trial) must return a dict of estimator parameters, got "
                f"{type(params).__name__}"
            )
        return params
    return {name: _suggest(trial, name, dist) for name, dist in search_space.items()}


class _DefaultHeadSpace:
    """Picklable callable behind :func:`default_head_space`."""

    def __init__(self, task, prefix, families, random_state):
        self.task = task
        self.prefix = prefix
        self.families = families
        self.random_state = random_state

    def __repr__(self):
        return (
            f"default_head_space({self.task!r}, prefix={self.prefix!r}, "
            f"families={list(self.families)!r}, random_state={self.random_state!r})"
        )

    def __call__(self, trial):
        from ..heads import HEAD_FAMILIES

        family = trial.suggest_categorical(f"{self.prefix}head", list(self.families))
        head = HEAD_FAMILIES[family].suggest(
            self.task, trial, prefix=self.prefix, random_state=self.random_state)
        return {f"{self.prefix}head": head}


def default_head_space(task="age", *, prefix="", families=None, random_state=None):
    """Search space over the head families of :mod:`skagegender.heads` and their settings.

    The returned callable is a ``search_space`` for :class:`HeadSearchCV` around an
    :class:`~skagegender.heads.AgeRegressor` or
    :class:`~skagegender.heads.GenderClassifier`: each trial picks a family and its key
    hyperparameters and sets ``head`` to the family's default estimator
    (:func:`~skagegender.heads.make_age_head` / :func:`~skagegender.heads.make_gender_head`)
    with those hyperparameters on its ``model`` step. The families, their estimators and
    their spaces are those of :data:`skagegender.heads.HEAD_FAMILIES`
    (``"lightgbm"`` is offered only when lightgbm is installed).

    Optuna's own parameter names are the family name and the hyperparameters prefixed
    by their family (``{"head": "mlp", "mlp__alpha": 0.01, ...}``, in
    ``study_.best_trial.params``); the estimator parameter set is
    ``{prefix + "head": <estimator>}``.

    Parameters
    ----------
    task : {"age", "gender"}, default="age"
        Which estimator the space is for.

    prefix : str, default=""
        Parameter path of the head estimator inside a pipeline, with its trailing
        ``"__"``, e.g. ``"age__"`` for a pipeline step named ``"age"``.

    families : sequence of str or None, default=None
        Restrict the families; None offers every family available.

    random_state : int or None, default=None
        Seed of the heads' own randomness (MLP initialisation, LightGBM bagging), so that
        a seeded search is reproducible.

    Returns
    -------
    search_space : callable
        ``search_space(trial) -> dict`` of estimator parameters. Picklable.

    Examples
    --------
    >>> from optuna.trial import FixedTrial
    >>> space = default_head_space("age", families=["mlp", "ordinal"])
    >>> params = space(FixedTrial({"head": "ordinal", "ordinal__alpha": 0.1}))
    >>> params["head"].get_params()["model__alpha"]
    0.1
    """
    from ..heads import available_head_families

    if task not in ("age", "gender"):
        raise ValueError(f"task must be 'age' or 'gender', got {task!r}")
    available = list(available_head_families())
    if families is None:
        families = available
    else:
        families = list(families)
        unknown = sorted(set(families) - set(available))
        if unknown or not families:
            raise ValueError(
                f"families {unknown or families} are not available; choose among {available}"
            )
    return _DefaultHeadSpace(task, prefix, tuple(families), random_state)
