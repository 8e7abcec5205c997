"""The package's layers: no module imports a layer above its own.

Every module under ``skagegender/`` is parsed (not imported), and every import it makes
(at the top or inside a function, absolute or relative) is checked against
:data:`MAY_IMPORT`. The README's architecture section shows the same order.
"""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "skagegender"

#: The layers, bottom up; each may import the layers listed for it and itself.
LAYERS = ("embedding", "heads", "metrics", "datasets", "model_selection", "model",
          "pretrained", "training", "cli")
_BOTTOM = ("embedding", "heads", "metrics")  # independent of each other
MAY_IMPORT = {
    "embedding": set(),
    "heads": set(),
    "metrics": set(),
    "datasets": {"embedding"},
    **{layer: set(LAYERS[:i]) for i, layer in enumerate(LAYERS) if i > len(_BOTTOM)},
}
#: Modules of the top package that belong to a layer. ``_utils`` and ``_archive`` are
#: free to all (and import nothing of the package); so is the top ``__init__`` (``__version__``), which
#: loads the subpackages lazily by name.
TOP_MODULES = {"__main__": "cli", "_utils": "_utils", "_archive": "_utils", "__init__": "__init__"}


def _layer(dotted):
    """The layer of the module ``skagegender.<...>`` named ``dotted``."""
    parts = dotted.split(".")
    assert parts[0] == "skagegender", dotted
    if len(parts) == 1:
        return "__init__"
    name = parts[1]
    if name in TOP_MODULES:
        return TOP_MODULES[name]
    if name in LAYERS:
        return name
    raise AssertionError(f"{dotted}: in no layer; add it to LAYERS (and to the README)")


def _imported(module, source, is_package):
    """The ``skagegender`` modules that ``source`` (of the module named ``module``) imports."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for alias in node.names:  # from . import datasets: the name is a module
                where = ROOT.joinpath(*target.split("."), alias.name)
                is_module = where.is_dir() or where.with_suffix(".py").is_file()
                yield node.lineno, f"{target}.{alias.name}" if is_module else target


def upward_imports(module, source, is_package=False):
    """``(line, imported module)`` of each import of ``source`` that its layer may not make."""
    own = _layer(module)
    found = []
    for line, target in _imported(module, source, is_package):
        if target.split(".")[0] != "skagegender":
            continue  # not the package
        layer = _layer(target)
        if own == "_utils":
            found.append((line, target))  # free to all, so it imports nothing of them
        elif layer in ("_utils", "__init__", own) or own in ("cli", "__init__"):
            continue
        elif layer not in MAY_IMPORT.get(own, ()):
            found.append((line, target))
    return found


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        yield name, path, is_package


def test_the_checker_catches_upward_imports():
    # the ways a module may name another, each one layer too high
    cases = {
        ("skagegender.model_selection._search", "from ..model import AgeGenderModel"): 1,
        ("skagegender.model_selection._search", "from .. import model"): 1,
        ("skagegender.heads._age", "import skagegender.metrics"): 1,
        ("skagegender.heads._age", "def f():\n    from skagegender.datasets import x"): 1,
        ("skagegender.datasets._registry", "from ..heads import AgeRegressor"): 1,
        ("skagegender.embedding._io", "from ..cli.tune import run"): 1,
        ("skagegender.model._stream", "from ..cli import _common"): 1,
        ("skagegender._utils", "from .embedding import load_image"): 1,
        # and the ways that are fine
        ("skagegender.datasets._registry", "from ..embedding import ArcFaceEmbedder"): 0,
        ("skagegender.model._age_gender", ("from ..heads import AgeRegressor\n"
                                           "from .._utils import round_age\nimport numpy")): 0,
        ("skagegender.heads._age", "from ._base import resolve_head"): 0,
        ("skagegender.model._persistence", "from .. import __version__"): 0,
        ("skagegender.cli.tune", "from ..model_selection import HeadSearchCV"): 0,
        ("skagegender.cli.predict", "from ..model import predict_stream"): 0,
    }
    for (module, source), n_upward in cases.items():
        assert len(upward_imports(module, source)) == n_upward, (module, source)
    assert upward_imports("skagegender.model", "from ..pretrained import load",
                          is_package=True) == [(1, "skagegender.pretrained")]
    with pytest.raises(AssertionError, match="in no layer"):
        upward_imports("skagegender.plugins", "import numpy", is_package=True)


def test_no_module_imports_a_layer_above_its_own():
    modules = list(_modules())
    assert len(modules) > 40
    layers = {_layer(name) for name, _, _ in modules}
    assert {"embedding", "heads", "metrics", "datasets", "model_selection", "model",
            "pretrained", "cli", "_utils"} <= layers
    internal = [target for name, path, is_package in modules
                for _, target in _imported(name, path.read_text(), is_package)
                if target.startswith("skagegender")]
    assert len(internal) > 100  # the parser sees the package's own imports
    problems = [f"{path.relative_to(ROOT)}:{line} imports {target} "
                f"({_layer(name)} may import {sorted(MAY_IMPORT.get(_layer(name), ())) or 'none'})"
                for name, path, is_package in modules
                for line, target in upward_imports(name, path.read_text(), is_package)]
    assert not problems, "\n".join(problems)


def test_the_readme_shows_the_same_layers():
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Architecture\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```text\n", 1)[1].split("```", 1)[0]
    layers = re.sub(r"\([^)]*\)", "", block.split("_utils")[0])  # without the remarks
    named = re.findall(r"[a-z_]+", layers)
    assert named == list(LAYERS)
    assert "Known exceptions" not in section


# -- module size ----------------------------------------------------------------------

#: Most lines a module of the package may have: past it, split it into modules named
#: for what they hold.
MAX_MODULE_LINES = 800
#: Modules known to be longer, with the reason; each entry fails the test once the
#: module is short enough, so that it is removed from here.
LONG_MODULES = {}


def long_modules(limit=MAX_MODULE_LINES):
    """``{path: lines}`` of the package's modules over ``limit`` lines."""
    found = {}
    for _, path, _ in _modules():
        n_lines = len(path.read_text().splitlines())
        if n_lines > limit:
            found[str(path.relative_to(ROOT))] = n_lines
    return found


def test_no_module_is_over_800_lines():
    found = long_modules()
    new = {path: n for path, n in found.items() if path not in LONG_MODULES}
    assert not new, f"modules over {MAX_MODULE_LINES} lines (split them): {new}"
    fixed = sorted(set(LONG_MODULES) - set(found))
    assert not fixed, f"now at most {MAX_MODULE_LINES} lines: remove {fixed} from LONG_MODULES"


def test_the_size_check_sees_long_modules():
    assert long_modules(limit=500)  # several modules are over 500 lines
    assert all(n > 100 for n in long_modules(limit=100).values())


# -- private names ----------------------------------------------------------------------

#: Private modules of the top package that every subpackage may import (helpers that
#: import nothing of the package).
FREE_MODULES = {"_utils", "_archive"}

#: Known imports of a private name across subpackages, ``(file, imported name)``, with
#: the reason they remain. Each fails the test once it is gone, so that it is removed.
PRIVATE_IMPORTS = {}


def _subpackage(dotted):
    """The part of the package a module belongs to: its subpackage, or its layer."""
    parts = dotted.split(".")
    if len(parts) == 1:
        return "__init__"
    return TOP_MODULES.get(parts[1], parts[1])


def private_imports(module, source, is_package=False):
    """``(line, name)`` of the private names ``source`` imports from another subpackage.

    A name is private when it, or a module on its path, starts with one underscore
    (dunder names such as ``__version__`` are public); :data:`FREE_MODULES` are free.
    """
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            names = [(target, alias.name) for alias in node.names]
        else:
            continue
        for target, name in names:
            if target.split(".")[0] != "skagegender":
                continue
            dotted = f"{target}.{name}" if name else target
            if _subpackage(dotted) == _subpackage(module):
                continue
            parts = dotted.split(".")[1:]
            private = [part for part in parts if part.startswith("_")
                       and not part.startswith("__") and part not in FREE_MODULES]
            if private:
                found.append((node.lineno, dotted))
    return found


def test_the_checker_catches_private_imports():
    cases = {
        ("skagegender.training._fast_recipe", "from ..embedding._chipnets import X"): 1,
        ("skagegender.training._fast_recipe", "from ..embedding import _chipnets"): 1,
        ("skagegender.training._fast_recipe", "from ..embedding import _helper"): 1,
        ("skagegender.cli.tune", "from ..model_selection._search import _open_storage"): 1,
        ("skagegender.heads._age", "def f():\n    import skagegender.metrics._age"): 1,
        ("skagegender.cli.tune", "from ._tune_inputs import _TuneError\nfrom ..embedding import _io"): 1,
        # and the ways that are fine
        ("skagegender.training._fast_recipe", "from ..embedding import DLIB_AGE_CLASSES"): 0,
        ("skagegender.model._age_gender", "from ._persistence import _Refused"): 0,
        ("skagegender.model._persistence", "from .. import __version__"): 0,
        ("skagegender.heads._age", "from .._utils import round_age\nfrom .._archive import x"): 0,
        ("skagegender.cli", "from .tune import run"): 0,
    }
    for (module, source), n_private in cases.items():
        assert len(private_imports(module, source)) == n_private, (module, source)


def test_no_private_name_is_imported_across_subpackages():
    found = {}
    for name, path, is_package in _modules():
        for line, dotted in private_imports(name, path.read_text(), is_package):
            found.setdefault((str(path.relative_to(ROOT)), dotted), line)
    new = [f"{path}:{line} imports {dotted}" for (path, dotted), line in found.items()
           if (path, dotted) not in PRIVATE_IMPORTS]
    assert not new, ("private names imported from another subpackage (export them from "
                     "its __init__ or move the helper):\n" + "\n".join(new))
    gone = sorted(set(PRIVATE_IMPORTS) - set(found))
    assert not gone, f"no longer imported: remove {gone} from PRIVATE_IMPORTS"


# -- the command line ----------------------------------------------------------------

#: Most lines of a command's module under ``skagegender/cli/``: a command declares its
#: options and runs over library functions (no cache, workers or drawing of its own).
MAX_COMMAND_LINES = 200
#: Command modules known to be longer, with the reason.
LONG_COMMANDS = {
    "tune.py": "its options carry long help texts (storage URLs, heartbeats, the feature "
               "file's format) and run() documents the JSON it prints",
}


def test_each_command_module_is_short():
    folder = PACKAGE / "cli"
    commands = [path for path in sorted(folder.glob("*.py")) if not path.name.startswith("_")]
    assert {path.stem for path in commands} == {"predict", "embed", "evaluate", "train", "tune"}
    sizes = {path.name: len(path.read_text().splitlines()) for path in commands}
    long = {name: n for name, n in sizes.items() if n > MAX_COMMAND_LINES}
    assert set(long) == set(LONG_COMMANDS), f"over {MAX_COMMAND_LINES} lines: {long}"
    assert all(n <= 2 * MAX_COMMAND_LINES for n in sizes.values()), sizes
    helpers = [path for path in folder.glob("_*.py") if path.name != "__init__.py"]
    assert all(len(path.read_text().splitlines()) <= 2 * MAX_COMMAND_LINES for path in helpers)


def test_the_commands_hold_no_cache_workers_or_drawing():
    # that is library work (skagegender.model.predict_stream, annotate_image, FaceCache)
    banned = re.compile(r"\b(?:Parallel|delayed|EmbeddingCache|FaceCache|cv2|atomic_write"
                        r"|ThreadPoolExecutor|ProcessPoolExecutor)\b")
    for path in sorted((PACKAGE / "cli").glob("*.py")):
        found = sorted(set(banned.findall(path.read_text())))
        if path.name == "embed.py":  # writes its .npz through the one safe writer
            found = [name for name in found if name != "atomic_write"]
        assert not found, f"{path.name} uses {found}"
