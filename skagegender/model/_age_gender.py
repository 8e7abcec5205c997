"""AgeGenderModel: photos in, age and gender of every face out."""

from __future__ import annotations

import copy
import numbers
from os import PathLike
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, _fit_context, clone
from sklearn.utils._param_validation import HasMethods
from sklearn.utils.validation import check_is_fitted

from .._utils import check_coverage, known_labels
from ._persistence import (
    BackboneMismatchError,
    ModelFileError,
    load_model_file,
    save_model_file,
)

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from numpy.typing import ArrayLike

    from ..embedding import ArcFaceEmbedder, Face

#: ArcFaceEmbedder settings taken from a model file: the backbone and those that
#: decide which face is embedded and how. The backbone is checked against
#: meta.json before anything is built, and must be the offline "sface".
FILE_SETTINGS = ("model", "layers", "flip_augment", "detect", "face_selection", "min_score",
                 "min_face_size", "det_retry_side", "identity")
#: Guards against hostile inputs, taken from a model file only if they are no
#: looser than ArcFaceEmbedder's defaults; a looser value is refused with a
#: ModelFileError (pass ``embedder=`` to :meth:`AgeGenderModel.load` to choose one).
GUARD_SETTINGS = ("max_pixels", "det_max_side", "max_bytes", "max_faces")
#: Estimator name under which a model file stores the arrays of an embedder's own
#: fine-tuned layer (:class:`~skagegender.embedding.FineTunedWeights`).
FINETUNED_KEY = "finetuned"
#: The layer those arrays replace.
FINETUNED_LAYER = "sface_finetuned"
# Every other setting (cache, n_jobs, providers, n_threads, batch_size, on_missing,
# color, and any added later) is about the machine or the caller: a loaded model
# gets its default, and the caller sets it after loading.


def _default_embedder():
    from ..embedding import ArcFaceEmbedder

    return ArcFaceEmbedder(layers="age-gender")


def _default_age():
    from ..heads import AgeRegressor

    return AgeRegressor()


def _default_gender():
    from ..heads import GenderClassifier

    return GenderClassifier()


def _compact(obj, seen=None):
    """Drop training-only state from fitted MLPs inside ``obj`` (in place, on save's copies).

    A fitted MLP keeps its Adam moments and, with early stopping, a copy of its
    best weights: three extra copies of every weight, useless for prediction.
    Weights are stored as float32. Walks pipelines, heads and calibrators.
    """
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, (list, tuple)):
        for item in obj:
            _compact(item, seen)
        return
    if not hasattr(obj, "__dict__") or isinstance(obj, (np.ndarray, type)):
        return
    if hasattr(obj, "coefs_") and hasattr(obj, "intercepts_"):
        obj._optimizer = None
        for name in ("_best_coefs", "_best_intercepts"):
            if hasattr(obj, name):
                delattr(obj, name)
        obj.coefs_ = [np.asarray(c, dtype=np.float32) for c in obj.coefs_]
        obj.intercepts_ = [np.asarray(c, dtype=np.float32) for c in obj.intercepts_]
        return
    for value in vars(obj).values():
        if isinstance(value, (BaseEstimator, list, tuple)) or hasattr(value, "__dict__"):
            _compact(value, seen)


class AgeGenderModel(BaseEstimator):
    """An embedder, an age head and a gender head, fitted and saved together.

    Parameters
    ----------
    embedder : ArcFaceEmbedder or None, default=None
        None means ``ArcFaceEmbedder(layers="age-gender")``.
    age_head : regressor or None, default=None
        Fitted on the embedder's features; None means :class:`~skagegender.heads.AgeRegressor`.
    gender_head : classifier or None, default=None
        None means :class:`~skagegender.heads.GenderClassifier`; not fitted when no
        gender labels are given.

    Attributes
    ----------
    age_head_, gender_head_ : fitted estimators (``gender_head_`` may be None)
    fallback_age_ : float
        The median training age. :func:`~skagegender.model.evaluate_model` (and
        ``skagegender evaluate``) scores images without a face with it, so they count
        as errors, not as skips.
    backbone_ : BackboneSpec
        The embedder's backbone (name, weights sha256, options), checked on load.

    Notes
    -----
    **No face**, one rule for every method and for a ``Pipeline`` of an embedder and
    heads: an image in which no face is found (or that cannot be read) gets a NaN
    age, a NaN interval, gender None and NaN probability, and the embedder warns
    once, counting and naming such images (``ArcFaceEmbedder(on_missing="raise")``
    raises instead). :meth:`predict_faces` returns an empty list for it. The
    metrics count a NaN age as wrong. :meth:`predict`, :meth:`predict_details` and
    :meth:`fit` take images; :meth:`predict_features` and :meth:`fit_features` take
    the embedder's feature rows (a row of NaN is an image without a face).

    Examples
    --------
    >>> import skagegender
    >>> model = skagegender.load()  # the shipped model      # doctest: +SKIP
    >>> model.predict_faces("photo.jpg")[0]["age"]        # doctest: +SKIP
    31.4
    """

    _parameter_constraints: ClassVar[dict] = {
        "embedder": [HasMethods(["transform", "backbone_info"]), None],
        "age_head": [HasMethods(["fit", "predict"]), None],
        "gender_head": [HasMethods(["fit", "predict_proba"]), None],
    }

    def __init__(self, embedder: ArcFaceEmbedder | None = None, *, age_head: Any = None,
                 gender_head: Any = None) -> None:
        self.embedder = embedder
        self.age_head = age_head
        self.gender_head = gender_head

    def _embedder(self):
        return self.embedder if self.embedder is not None else _default_embedder()

    @_fit_context(prefer_skip_nested_validation=False)  # the heads validate their own
    def fit(self, X: Sequence, age: ArrayLike, gender: ArrayLike | None = None) -> AgeGenderModel:
        """Embed images X and fit the heads.

        Parameters
        ----------
        X : sequence of images
        age : array-like of shape (n_images,)
        gender : array-like of shape (n_images,) or None

        Returns
        -------
        self : AgeGenderModel
        """
        return self.fit_features(self._embedder().transform(X), age, gender)

    @_fit_context(prefer_skip_nested_validation=False)
    def fit_features(self, features: np.ndarray, age: ArrayLike,
                     gender: ArrayLike | None = None) -> AgeGenderModel:
        """Fit the heads on precomputed features (rows of NaN are dropped by the heads).

        Parameters
        ----------
        features : ndarray of shape (n_images, n_features)
            Output of this model's embedder.
        age : array-like of shape (n_images,)
        gender : array-like of shape (n_images,) or None

        Returns
        -------
        self : AgeGenderModel
        """
        embedder = self._embedder()
        self.embedder_ = clone(embedder)
        self.backbone_ = self.embedder_.backbone_info()
        age = np.asarray(age, dtype=float)
        self.fallback_age_ = float(np.nanmedian(age))
        self.age_head_ = clone(self.age_head if self.age_head is not None else _default_age())
        self.age_head_.fit(features, age)
        self.gender_head_ = None
        if gender is not None:
            gender = np.asarray(gender, dtype=object)
            known = known_labels(gender)
            head = self.gender_head if self.gender_head is not None else _default_gender()
            self.gender_head_ = clone(head).fit(features[known], gender[known].astype(str))
        self.n_features_in_ = features.shape[1]
        return self

    @classmethod
    def from_fitted_heads(cls, embedder: ArcFaceEmbedder, age_head: Any,
                          gender_head: Any = None, *, fallback_age: float,
                          meta: dict | None = None) -> AgeGenderModel:
        """A fitted model from heads already fitted on ``embedder``'s features.

        The model is the one :meth:`fit_features` leaves, with these heads used as
        they are (not cloned, not refitted): ``embedder_`` is a clone of
        ``embedder``, ``backbone_`` its backbone, ``n_features_in_`` the heads'
        feature width.

        Parameters
        ----------
        embedder : ArcFaceEmbedder
            The embedder whose features the heads were fitted on.
        age_head : fitted regressor
        gender_head : fitted classifier or None
            None: the model predicts no gender.
        fallback_age : float
            The age :func:`~skagegender.model.evaluate_model` gives an image
            without a face (the median training age, in :meth:`fit`).
        meta : dict or None
            Kept as ``meta_`` (the metadata of a model file, in :meth:`load`);
            None sets no ``meta_``, as :meth:`fit` does.

        Returns
        -------
        model : AgeGenderModel
            Fitted.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            When a head is not fitted.
        ValueError
            When the heads take a feature width other than the embedder's (or
            other than each other's), or ``fallback_age`` is not a finite number.
        """
        if (isinstance(fallback_age, bool) or not isinstance(fallback_age, numbers.Real)
                or not np.isfinite(fallback_age)):
            raise ValueError(f"fallback_age must be a finite number of years, "
                             f"got {fallback_age!r}")
        if age_head is None or not hasattr(age_head, "predict"):
            raise ValueError(f"age_head must be a fitted regressor, got {age_head!r}")
        if gender_head is not None and not hasattr(gender_head, "predict_proba"):
            raise ValueError(f"gender_head must be a fitted classifier or None, "
                             f"got a {type(gender_head).__name__}")
        heads = {"age_head": age_head, "gender_head": gender_head}
        for head in heads.values():
            if head is not None:
                check_is_fitted(head)
        model = cls(embedder=embedder)
        model.embedder_ = clone(embedder)
        model.backbone_ = model.embedder_.backbone_info()
        widths = {"the embedder": model.backbone_.embedding_dim,
                  **{name: getattr(head, "n_features_in_", None)
                     for name, head in heads.items()}}
        known = {name: int(w) for name, w in widths.items() if w is not None}
        if len(set(known.values())) > 1:
            raise ValueError(
                "the heads must take the embedder's features: feature widths "
                + ", ".join(f"{name} {w}" for name, w in known.items()))
        if not known:
            raise ValueError("the feature width is unknown: neither the embedder nor the "
                             "heads give one (n_features_in_)")
        model.age_head_ = age_head
        model.gender_head_ = gender_head
        model.fallback_age_ = float(fallback_age)
        model.n_features_in_ = next(iter(known.values()))
        if meta is not None:
            model.meta_ = meta
        return model

    # -- prediction ----------------------------------------------------------

    def _age_and_gender(self, features, coverage=0.8):
        check_coverage(coverage)
        n = len(features)
        found = ~np.isnan(features).any(axis=1)
        ages = np.full(n, np.nan)
        intervals = np.full((n, 2), np.nan)
        genders = np.full(n, None, dtype=object)
        probability = np.full(n, np.nan)
        if found.any():
            rows = features[found]
            ages[found] = self.age_head_.predict(rows)
            # A head without intervals has no predict_interval (heads offer it
            # through available_if); any error of one that has it is a real one.
            if hasattr(self.age_head_, "predict_interval"):
                intervals[found] = self.age_head_.predict_interval(rows, coverage=coverage)
            if self.gender_head_ is not None:
                proba = self.gender_head_.predict_proba(rows)
                best = proba.argmax(axis=1)
                genders[found] = self.gender_head_.classes_[best]
                probability[found] = proba[np.arange(len(rows)), best]
        return ages, intervals, genders, probability, found

    def predict(self, X: Sequence) -> np.ndarray:
        """Age in years of the selected face of each image, NaN where no face is found.

        Parameters
        ----------
        X : sequence of images
            Paths, encoded bytes, arrays or PIL images, as for :meth:`fit`.

        Returns
        -------
        age : ndarray of shape (n_images,)
            NaN for an image without a face (see Notes in the class docstring).
        """
        check_is_fitted(self, "age_head_")
        return self._age_and_gender(self.embedder_.transform(X))[0]

    def predict_details(self, X: Sequence, *, coverage: float = 0.8) -> dict[str, np.ndarray]:
        """Everything the heads say about the selected face of each image.

        Parameters
        ----------
        X : sequence of images
            Paths, encoded bytes, arrays or PIL images, as for :meth:`predict`.
        coverage : float in (0, 1), default=0.8
            Probability that the age interval holds the true age.

        Returns
        -------
        details : dict of arrays
            As :meth:`predict_features` returns for the images' feature rows.
        """
        check_is_fitted(self, "age_head_")
        if isinstance(X, np.ndarray) and X.ndim == 2 and X.dtype.kind in "fiu":
            raise TypeError(
                "predict_details takes images, like predict; for feature rows of this "
                "model's embedder use predict_features(features)")
        check_coverage(coverage)  # before any embedding work
        return self.predict_features(self.embedder_.transform(X), coverage=coverage)

    def predict_features(self, features: ArrayLike, *,
                         coverage: float = 0.8) -> dict[str, np.ndarray]:
        """Everything the heads say about precomputed feature rows.

        Parameters
        ----------
        features : ndarray of shape (n_images, n_features)
            Rows of this model's embedder; a row of NaN is an image without a face.
        coverage : float in (0, 1), default=0.8
            Probability that the age interval holds the true age.

        Returns
        -------
        details : dict of arrays
            ``age`` (NaN where no face), ``age_interval`` (n, 2; ``coverage``,
            NaN where no face or where the head gives none), ``gender`` (None where
            no face or no gender head), ``gender_probability``, ``found``.
        """
        check_is_fitted(self, "age_head_")
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != self.n_features_in_:
            raise ValueError(
                f"features have {features.shape[-1]} columns, but this model's heads were "
                f"fitted on {self.n_features_in_} (backbone {self.backbone_.name})"
            )
        ages, intervals, genders, probability, found = self._age_and_gender(features, coverage)
        return {"age": ages, "age_interval": intervals, "gender": genders,
                "gender_probability": probability, "found": found}

    def predict_faces(self, image: Any, *, faces: list[Face] | None = None,
                      coverage: float = 0.8) -> list[dict]:
        """Age and gender of **every** face in one image.

        Faces come in a stable reading order: left to right by the x of their box
        centre, ties top to bottom. Two copies of one photo (shifted, padded or
        re-encoded) therefore number their faces alike, whatever the detector's
        scores; ``skagegender predict`` and its ``--annotate`` pictures use this
        numbering.

        Parameters
        ----------
        image : path, bytes, ndarray or PIL image
            The photo. Not read when ``faces`` is given.
        faces : list of Face or None, default=None
            The photo's faces with their ``embedding`` computed by this model's
            embedder, as :meth:`ArcFaceEmbedder.detect_faces` returns them (for
            example read back from an embedding cache). None detects them in
            ``image``.
        coverage : float in (0, 1), default=0.8
            Probability that ``age_interval`` holds the true age (the shipped
            model's interval is calibrated for any coverage; see its model card).

        Returns
        -------
        faces : list of dict
            One per face, in the order above: ``box`` [x1, y1, x2, y2], ``score``,
            ``landmarks`` (5 [x, y] pairs), ``age``, ``age_interval`` ([lo, hi] or
            None), ``gender``, ``gender_probability``. Empty when no face is found.

        Raises
        ------
        skagegender.embedding.ImageLoadError
            When the image cannot be read.
        """
        check_is_fitted(self, "age_head_")
        check_coverage(coverage)  # before any detection work
        if faces is None:
            faces = self.embedder_.detect_faces(image)
        return self._face_records([faces], coverage)[0]

    def _face_records(self, faces_per_image, coverage):
        """:meth:`predict_faces` records of the faces of several images, the heads run
        once on all of them; one list per image."""
        ordered = [sorted(faces, key=lambda f: ((float(f.box[0]) + float(f.box[2])) / 2,
                                                (float(f.box[1]) + float(f.box[3])) / 2))
                   for faces in faces_per_image]
        every = [face for faces in ordered for face in faces]
        if not every:
            return [[] for _ in ordered]
        details = self.predict_features(np.stack([f.embedding for f in every]),
                                        coverage=coverage)
        records = []
        for i, face in enumerate(every):
            interval = details["age_interval"][i]
            gender = details["gender"][i]
            records.append({
                "box": [round(float(v), 1) for v in face.box],
                "score": round(float(face.score), 4),
                "landmarks": [[round(float(x), 1), round(float(y), 1)] for x, y in face.landmarks],
                "age": round(float(details["age"][i]), 1),
                "age_interval": None if np.isnan(interval).any()
                else [round(float(interval[0]), 1), round(float(interval[1]), 1)],
                "gender": None if gender is None else str(gender),
                "gender_probability": None if np.isnan(details["gender_probability"][i])
                else round(float(details["gender_probability"][i]), 4),
            })
        out, start = [], 0
        for faces in ordered:
            out.append(records[start:start + len(faces)])
            start += len(faces)
        return out

    # -- files ---------------------------------------------------------------

    def save(self, path: str | PathLike, *, extra_meta: dict | None = None) -> Path:
        """Write the fitted model to one safe model file (see :func:`save_model_file`).

        An embedder that runs a fine-tuned layer of its own
        (``ArcFaceEmbedder(finetuned_weights=...)``) has the layer's arrays stored
        beside the heads, as plain arrays under the estimator name ``"finetuned"``.
        """
        check_is_fitted(self, "age_head_")
        # the file gets compact copies of the heads; this model keeps its own
        age_head, gender_head = copy.deepcopy((self.age_head_, self.gender_head_))
        _compact((age_head, gender_head))
        embedder = self.embedder_
        weights = getattr(embedder, "finetuned_weights", None)
        if weights is not None:
            # the layer's numbers are stored as plain arrays, never as an object; the
            # stored embedder names none (load rebuilds them through FineTunedWeights)
            embedder = clone(embedder).set_params(finetuned_weights=None)
        estimators = {"age": age_head, "embedder": embedder}
        if weights is not None and FINETUNED_LAYER in _resolved_layers(self.embedder_):
            estimators[FINETUNED_KEY] = dict(weights.arrays)
        if gender_head is not None:
            estimators["gender"] = gender_head
        meta = {"backbone": self.backbone_.to_dict(), "fallback_age": self.fallback_age_,
                "n_features": int(self.n_features_in_), **(extra_meta or {})}
        return save_model_file(path, estimators, meta)

    @classmethod
    def load(cls, path: str | PathLike | None = None, *,
             embedder: ArcFaceEmbedder | None = None) -> AgeGenderModel:
        """Read a model file written by :meth:`save`.

        The heads are read by :func:`load_model_file` (no code chosen by the
        file runs). The embedder is not used as stored: a fresh
        ``ArcFaceEmbedder`` is built from the stored :data:`FILE_SETTINGS` and
        :data:`GUARD_SETTINGS` once they are checked (the backbone against
        meta.json, the guards against the defaults); every other setting gets
        its default (set ``model.embedder_.set_params(n_jobs=..., cache=...)``
        after loading). A file saved before a setting existed loads with that
        setting's default.

        A file that stores a fine-tuned layer of its own (see :meth:`save`) has
        its arrays checked by :class:`~skagegender.embedding.FineTunedWeights`
        (exact names, shapes, dtypes, finite values) and run in skagegender's
        graph; their sha256 must be the one in the file's backbone.

        Parameters
        ----------
        path : str or path-like
            The model file. The shipped models load with :func:`skagegender.load`
            (a missing path raises a TypeError that says so).
        embedder : ArcFaceEmbedder or None
            Run the heads behind this embedder instead of one rebuilt from the
            file; its backbone must be the one the heads were fitted on. When it
            has no ``finetuned_weights`` and the file stores a layer, the file's
            layer is used.

        Returns
        -------
        model : AgeGenderModel
            Fitted; ``meta_`` holds the file's metadata.

        Raises
        ------
        ModelFileError
            Tampered, truncated, oversized or untrusted file, a file that is not
            an AgeGenderModel, or stored embedder settings that are refused.
        BackboneMismatchError
            When the backbone available here (or ``embedder``'s) differs from the
            one the model was fitted on: its features would mean something else.
        """
        if path is None:
            raise TypeError(
                "AgeGenderModel.load() needs the path of a model file; the shipped models "
                "load with skagegender.load() (or skagegender.load('fast'))")
        estimators, meta = load_model_file(path)
        age_head, gender_head = _checked_heads(path, estimators, meta)
        weights = _checked_weights(path, estimators.get(FINETUNED_KEY))
        if embedder is not None:
            use = clone(embedder)
        else:
            use = _embedder_from_file(path, estimators["embedder"], meta)
        if weights is not None:
            if FINETUNED_LAYER not in _resolved_layers(use):
                raise ModelFileError(
                    f"{str(path)!r}: stores a fine-tuned layer, but its embedder's layers "
                    f"{use.get_params().get('layers')!r} do not run one")
            if use.get_params().get("finetuned_weights") is None:
                use.set_params(finetuned_weights=weights)
        try:
            spec = use.backbone_info()
        except ValueError as exc:
            raise ModelFileError(f"{str(path)!r}: cannot build its embedder ({exc})") from None
        difference = spec.mismatch(meta["backbone"])
        if difference is not None:
            key, here, stored = difference
            raise BackboneMismatchError(
                f"model file {str(path)!r} was fitted on backbone {key} {stored!r}, but the "
                f"embedder here has {here!r}; the heads expect that backbone's features and "
                "would give meaningless predictions on others"
            )
        if spec.embedding_dim != meta["n_features"]:
            raise BackboneMismatchError(
                f"model file {str(path)!r}: its heads take {meta['n_features']} features, "
                f"the embedder gives {spec.embedding_dim}"
            )
        return cls.from_fitted_heads(use, age_head, gender_head,
                                     fallback_age=meta["fallback_age"], meta=meta)


def _checked_heads(path, estimators, meta):
    """The age and gender heads of a loaded file, once the file is an AgeGenderModel's."""
    def refuse(reason):
        return ModelFileError(f"{str(path)!r}: {reason}")

    missing = sorted({"age", "embedder"} - set(estimators))
    extra = sorted(set(estimators) - {"age", "embedder", "gender", FINETUNED_KEY})
    if missing or extra:
        raise refuse(
            "is not an AgeGenderModel file: it holds the estimators "
            f"{sorted(estimators)}, expected 'age', 'embedder' and optionally 'gender' and "
            f"{FINETUNED_KEY!r}"
        )
    fallback, n_features = meta.get("fallback_age"), meta.get("n_features")
    if type(fallback) not in (int, float) or not 0 <= fallback <= 150:
        raise refuse(f"meta['fallback_age'] must be an age in years, got {fallback!r}")
    if type(n_features) is not int or n_features < 1:
        raise refuse(f"meta['n_features'] must be a positive int, got {n_features!r}")
    age, gender = estimators["age"], estimators.get("gender")
    if not hasattr(age, "predict"):
        raise refuse(f"its age head is a {type(age).__name__}, which cannot predict")
    if gender is not None and not all(hasattr(gender, a) for a in ("predict_proba", "classes_")):
        raise refuse(f"its gender head is a {type(gender).__name__}, not a fitted classifier")
    for name, head in (("age", age), ("gender", gender)):
        fitted_on = getattr(head, "n_features_in_", n_features)
        if fitted_on != n_features:
            raise refuse(f"its {name} head takes {fitted_on!r} features, meta says {n_features}")
    return age, gender


def _resolved_layers(embedder):
    """The block names an embedder's ``layers`` expand to (empty when unknown)."""
    from ..embedding import resolve_layers

    try:
        return resolve_layers(embedder.get_params().get("layers"))
    except (ValueError, TypeError):
        return ()


def _checked_weights(path, stored):
    """The FineTunedWeights of a file's ``"finetuned"`` entry (None when absent), checked."""
    if stored is None:
        return None
    from ..embedding import FineTunedWeights

    if type(stored) is not dict:
        raise ModelFileError(f"{str(path)!r}: its fine-tuned layer is a "
                             f"{type(stored).__name__}, not a dict of arrays")
    try:
        return FineTunedWeights(stored)
    except ValueError as exc:
        raise ModelFileError(f"{str(path)!r}: its fine-tuned layer is refused ({exc})") from None


def _embedder_from_file(path, stored, meta):
    """A fresh ArcFaceEmbedder from the checked settings of the stored one.

    Nothing is built before the checks pass: the stored object is only read.
    """
    from sklearn.utils._param_validation import InvalidParameterError

    from ..embedding import ArcFaceEmbedder, BackboneSpec, resolve_layers

    def refuse(reason):
        return ModelFileError(f"{str(path)!r}: {reason}")

    if type(stored) is not ArcFaceEmbedder:
        raise refuse(f"its embedder is a {type(stored).__name__}, not an ArcFaceEmbedder")
    state, defaults = vars(stored), ArcFaceEmbedder().get_params()
    params = {}
    for name in FILE_SETTINGS + GUARD_SETTINGS:
        if name not in state or name not in defaults:
            continue  # written before the setting existed, or by a newer skagegender
        value = state[name]
        items = value if isinstance(value, (list, tuple)) else [value]
        if not all(v is None or type(v) in (bool, int, float, str) for v in items):
            raise refuse(f"its embedder setting {name}={value!r} is not a plain value")
        params[name] = value
    embedder = ArcFaceEmbedder(**params)
    try:
        embedder._validate_params()
        layers = list(resolve_layers(embedder.layers))
    except (InvalidParameterError, ValueError, TypeError) as exc:
        raise refuse(f"its embedder settings are invalid ({exc})") from None
    for name in GUARD_SETTINGS:
        bound, value = defaults.get(name), params.get(name)
        if name in params and bound is not None and (value is None or value > bound):
            raise refuse(
                f"its embedder setting {name}={value!r} loosens a guard past the default "
                f"{bound!r}; a model file may only tighten it. If you trust the file, load it "
                f"with AgeGenderModel.load(path, embedder=ArcFaceEmbedder(..., {name}=...))"
            )
    backbone = BackboneSpec.from_dict(meta["backbone"])  # checked by load_model_file
    if embedder.model != backbone.name:
        raise BackboneMismatchError(
            f"model file {str(path)!r}: its embedder names the backbone {embedder.model!r}, "
            f"its metadata {backbone.name!r}"
        )
    if embedder.model != "sface":
        raise refuse(
            f"was fitted on the backbone {embedder.model!r}, which is not part of "
            "skagegender (an InsightFace pack, folder or file, possibly downloaded); a model "
            "file does not choose it. If you trust it, load the file with "
            f"AgeGenderModel.load(path, embedder=ArcFaceEmbedder(model={embedder.model!r}, ...))"
        )
    stored_options = {"layers": layers, "flip_augment": bool(embedder.flip_augment)}
    for key, value in stored_options.items():
        if key in backbone.options and backbone.options[key] != value:
            raise BackboneMismatchError(
                f"model file {str(path)!r}: its embedder has {key}={value!r}, its metadata "
                f"{backbone.options[key]!r}"
            )
    return embedder
