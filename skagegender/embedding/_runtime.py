"""Which inference engine runs the ONNX networks: onnxruntime or OpenVINO.

Every network the ``"sface"`` backbone runs (YuNet, SFace, the dlib age and
gender networks, the fine-tuned SFace layer, the compact network) is made by :func:`make_session`
(through :func:`skagegender.embedding._assets.make_session`), which returns an
object with onnxruntime's calling interface: ``run(output_names, feed)``,
``get_inputs()`` and ``get_outputs()``. Two engines can stand behind it:

- ``"openvino"``: OpenVINO's CPU plugin (the ``openvino`` package, ``pip install
  'skagegender[openvino]'``), in float32 (``INFERENCE_PRECISION_HINT`` ``"f32"``,
  so bfloat16 or float16 is never used even where the CPU has them). About twice
  as fast as onnxruntime on SFace on CPUs with AVX-512 (measured in
  ``benchmarks/results/throughput.md``).
- ``"onnxruntime"``: onnxruntime's CPU (or another requested) execution provider.

The engine is chosen per process by the environment variable
``SKAGEGENDER_RUNTIME``: ``"onnxruntime"`` or ``"openvino"`` run every network
with that engine; ``"auto"`` (the same as unset) runs each network with the
engine measured faster for it on one core (``benchmarks/results/throughput.md``):
SFace and the compact network with OpenVINO when the ``openvino`` package is
installed (about half the time), every other network with onnxruntime. OpenVINO
was slower on the others: YuNet's input takes each photo's size and OpenVINO
prepares its kernels again for every new size; the dlib networks and the
fine-tuned layer, run one face at a time by ``predict``, cost OpenVINO more per
call. Without the package,
``"auto"`` is onnxruntime throughout; ``"openvino"`` without it raises an
ImportError that says how to install it. Execution providers other than the CPU's
(``ArcFaceEmbedder(providers=["CUDAExecutionProvider"])``) are onnxruntime's:
when they are asked for, onnxruntime runs the networks whatever the variable
says. It is no estimator parameter: a model file or a fitted estimator does not
record it, and the engines give the same features within float32 rounding
(``tests/test_runtime.py`` checks the shipped models' predictions on real
photos: feature values within 2e-3, ages within 0.05 years, gender
probabilities within 1e-3), so the feature cache is shared by all choices.

OpenVINO keeps the networks it compiled from files in ``<cache folder>/openvino``
(its ``CACHE_DIR``; the cache folder of :func:`~skagegender.embedding._assets.cache_dir`),
so a later process skips reading and compiling them: one compiled copy per shipped
network and conversion (about 75 MB for the shipped models). Those files are
trusted as much as the converted models beside them. Networks given as bytes (a
fine-tuned layer's own weights) are compiled at every start and never cached.

OpenVINO is imported only when a network is first made with it, never by
``import skagegender``.
"""

import importlib.util
import os
import threading

#: The environment variable that chooses the engine.
RUNTIME_ENV = "SKAGEGENDER_RUNTIME"
#: The engines :data:`RUNTIME_ENV` may name (besides ``"auto"``).
RUNTIMES = ("onnxruntime", "openvino")


def runtime_name(*, auto="openvino"):
    """The engine this process runs a network with: ``"onnxruntime"`` or ``"openvino"``.

    Read from ``$SKAGEGENDER_RUNTIME`` at every call: the engine it names, or with
    ``"auto"`` (or unset) the network's own ``auto`` choice, onnxruntime where
    that is OpenVINO but the ``openvino`` package is not installed.

    Parameters
    ----------
    auto : {"openvino", "onnxruntime"}, default="openvino"
        The engine for this network under ``"auto"``: ``"openvino"`` for SFace,
        ``"onnxruntime"`` for the other networks (see the module docstring).

    Returns
    -------
    name : str

    Raises
    ------
    ValueError
        When the variable names no engine.
    """
    value = os.environ.get(RUNTIME_ENV, "").strip().lower()
    if value in ("", "auto"):
        if auto == "openvino" and importlib.util.find_spec("openvino") is not None:
            return "openvino"
        return "onnxruntime"
    if value not in RUNTIMES:
        raise ValueError(f"${RUNTIME_ENV} must be one of {', '.join(RUNTIMES)} or auto, "
                         f"got {os.environ[RUNTIME_ENV]!r}")
    return value


def _cpu_only(providers):
    names = [p[0] if isinstance(p, tuple) else p for p in (providers or ())]
    return all(name == "CPUExecutionProvider" for name in names)


def make_session(model, *, providers=None, n_threads=1, optimization="all", runtime=None,
                 auto="onnxruntime"):
    """A session of an ONNX model in the chosen engine, with onnxruntime's interface.

    Parameters
    ----------
    model : path-like or bytes
        An ONNX file, or a serialised ONNX model.
    providers : list of str or None, default=None
        onnxruntime execution providers; None is CPU. Any provider other than
        ``"CPUExecutionProvider"`` makes it an onnxruntime session.
    n_threads : int, default=1
        Threads the engine uses for one inference.
    optimization : {"all", "extended"}, default="all"
        onnxruntime's graph optimisation level (OpenVINO ignores it).
    runtime : {"onnxruntime", "openvino"} or None, default=None
        The engine; None is :func:`runtime_name` ``(auto=auto)``.
    auto : {"onnxruntime", "openvino"}, default="onnxruntime"
        The engine for this network when ``$SKAGEGENDER_RUNTIME`` is ``"auto"``.

    Returns
    -------
    session : onnxruntime.InferenceSession or OpenVINOSession
    """
    runtime = runtime_name(auto=auto) if runtime is None else runtime
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    if runtime == "openvino" and _cpu_only(providers):
        return OpenVINOSession(model, n_threads=n_threads)
    import onnxruntime as ort

    from ._assets import available_providers, session_options

    source = model if isinstance(model, bytes) else os.fspath(model)
    return ort.InferenceSession(
        source, sess_options=session_options(n_threads=n_threads, optimization=optimization),
        providers=available_providers(providers))


_core = None
_core_lock = threading.Lock()


def _openvino_core():
    """The process's ``openvino.Core`` (made once: it loads the plugins)."""
    global _core
    with _core_lock:
        if _core is None:
            try:
                import openvino
            except ImportError as exc:
                raise ImportError(
                    f"${RUNTIME_ENV}=openvino needs the openvino package: "
                    "pip install 'skagegender[openvino]' (or unset the variable to use "
                    "onnxruntime)") from exc
            _core = openvino.Core()
    return _core


class _Port:
    """A graph input or output: its name (what onnxruntime's ``NodeArg`` gives)."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"_Port({self.name!r})"


def _graph_name(port):
    """The ONNX name of a compiled model's input or output.

    A port may carry several names (the graph output's and the internal tensor's);
    OpenVINO's ONNX reader names the node of graph output ``NAME`` ``NAME/sink_port_0``.
    """
    names = port.get_names()
    if len(names) == 1:
        return next(iter(names))
    node = port.get_node().get_friendly_name().rsplit("/sink_port_", 1)[0]
    return node if node in names else min(names)


def _cache_folder():
    """Where OpenVINO keeps compiled networks (None: not cached)."""
    from ._assets import cache_dir

    folder = cache_dir() / "openvino"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder if os.access(folder, os.W_OK) else None


def _compile_file(core, path, config):
    """``core.compile_model(path)``, through OpenVINO's cache of compiled networks.

    The cache (``<cache folder>/openvino``) is trusted as much as the converted models
    beside it: only files whose sha256 was checked, or that skagegender converted,
    are compiled from a path. A cache that cannot be used is left out.
    """
    folder = _cache_folder()
    if folder is not None:
        try:
            return core.compile_model(path, "CPU", {**config, "CACHE_DIR": str(folder)})
        except RuntimeError:
            pass
    return core.compile_model(path, "CPU", config)


class OpenVINOSession:
    """An ONNX model compiled by OpenVINO for the CPU, called like an onnxruntime session.

    Float32 inference (``INFERENCE_PRECISION_HINT`` ``"f32"``), latency hint,
    ``n_threads`` threads. Inputs may have any shape the model's symbolic
    dimensions allow. Each thread runs its own infer request, so one session may
    be used from several threads at once, as an onnxruntime session can.

    Parameters
    ----------
    model : path-like or bytes
        An ONNX file or a serialised ONNX model.
    n_threads : int, default=1
    """

    runtime = "openvino"

    def __init__(self, model, *, n_threads=1):
        core = _openvino_core()
        config = {"INFERENCE_NUM_THREADS": int(n_threads), "INFERENCE_PRECISION_HINT": "f32",
                  "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        if isinstance(model, bytes):
            self._compiled = core.compile_model(core.read_model(model=model), "CPU", config)
        else:  # from the path: a compiled copy in the cache skips reading the file
            self._compiled = _compile_file(core, os.fspath(model), config)
        self._inputs = [_Port(_graph_name(port)) for port in self._compiled.inputs]
        self._outputs = [_Port(_graph_name(port)) for port in self._compiled.outputs]
        # run() takes any name of an output (a compiled port may also carry the name of
        # the internal tensor it comes from: YuNet's "cls_8" is also "291")
        self._output_index = {}
        for index, port in enumerate(self._compiled.outputs):
            for name in sorted(port.get_names()):
                self._output_index.setdefault(name, index)
        for index, port in enumerate(self._outputs):
            self._output_index[port.name] = index
        self._local = threading.local()

    def get_inputs(self):
        """The graph inputs (objects with a ``name``), in order."""
        return list(self._inputs)

    def get_outputs(self):
        """The graph outputs (objects with a ``name``), in order."""
        return list(self._outputs)

    def get_providers(self):
        """``["OpenVINO CPU"]``: where the model runs (onnxruntime's method, for reports)."""
        return ["OpenVINO CPU"]

    def _request(self):
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        return request

    def run(self, output_names, input_feed):
        """Outputs ``output_names`` (None: all) for ``input_feed`` ``{input name: array}``.

        Returns
        -------
        outputs : list of ndarray
            Copies: later calls do not change them.
        """
        import numpy as np

        if output_names is None:
            indices = range(len(self._outputs))
        else:
            unknown = [name for name in output_names if name not in self._output_index]
            if unknown:
                raise ValueError(f"the model has no outputs {unknown}; it has "
                                 f"{[port.name for port in self._outputs]}")
            indices = [self._output_index[name] for name in output_names]
        request = self._request()
        request.infer({name: np.ascontiguousarray(value) for name, value in input_feed.items()})
        return [np.array(request.get_output_tensor(i).data, copy=True) for i in indices]
