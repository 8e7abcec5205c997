"""The scores of ``skagegender evaluate`` as text, and as one HTML page with plots."""

from __future__ import annotations

import base64
import html
import io
import math
from os import PathLike
from pathlib import Path

import numpy as np

from .._utils import atomic_write, known_labels
from ._plot import AgeErrorDisplay, GenderReliabilityDisplay, IntervalCoverageDisplay

__all__ = ["evaluation_html", "evaluation_text", "write_evaluation_report"]


def _cell(value, form):
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    return f"{'':>8}" if missing else f"{value:>8{form}}"


def evaluation_text(result: dict) -> str:
    """The scores as ``skagegender evaluate`` prints them: two summary lines and a table.

    Parameters
    ----------
    result : dict
        :func:`~skagegender.model.evaluate_model`'s report, with ``dataset`` and
        ``seconds`` added.

    Returns
    -------
    text : str
        Lines ending in a newline. A model without intervals gets "n/a" for them.
    """
    gacc = result["gender_accuracy"]
    lines = [
        (f"{result.get('dataset', 'dataset')}: {result['n_images']} images, "
         f"{result['n_faces_found']} faces found, {result.get('seconds', 0)} s"),
        (f"MAE {result['mae']:.2f}  one-class-off {result['one_class_off']:.1%}  "
         f"CS@5 {result['cs5']:.1%}  gender " + ("n/a" if gacc is None else f"{gacc:.1%}")),
    ]
    ece = "" if result.get("gender_ece") is None else f"  gender ECE {result['gender_ece']:.3f}"
    if result.get("interval_coverage") is not None:
        lines.append(f"80 % age interval: coverage {result['interval_coverage']:.1%}, mean "
                     f"width {result['interval_width']:.1f} years" + ece)
    else:
        lines.append("80 % age interval: n/a (this model's age head gives no intervals)" + ece)
    lines.append(f"{'group':<22}{'n':>7}{'MAE':>8}{'1CoA':>8}{'CS@5':>8}{'gender':>8}"
                 f"{'cover':>8}{'width':>8}{'ECE':>8}")
    for kind, rows in result["per_group"].items():
        for group, row in rows.items():
            lines.append(f"{kind + ' ' + group:<22}{row['n']:>7}"
                         + _cell(row["mae"], ".2f") + _cell(row["one_class_off"], ".1%")
                         + _cell(row["cs5"], ".1%") + _cell(row.get("gender_accuracy"), ".1%")
                         + _cell(row.get("interval_coverage"), ".1%")
                         + _cell(row.get("interval_width"), ".1f")
                         + _cell(row.get("gender_ece"), ".3f"))
    return "".join(line + "\n" for line in lines)


def _png(draw):
    """A data URL of the PNG of ``draw(ax)`` on a new 6 x 4.5 inch figure."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    figure = Figure(figsize=(6, 4.5), dpi=100, layout="constrained")
    draw(figure.add_subplot())
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figures(predictions):
    """(caption, data URL) of each plot the predictions allow."""
    age_true = np.asarray(predictions["age_true"], dtype=float)
    age_pred = np.asarray(predictions["age_pred"], dtype=float)
    figures = [
        ("Predicted against true age",
         _png(lambda ax: AgeErrorDisplay.from_predictions(age_true, age_pred, ax=ax))),
        ("Error per age group",
         _png(lambda ax: AgeErrorDisplay.from_predictions(age_true, age_pred, kind="per_group",
                                                          ax=ax))),
    ]
    interval = predictions.get("age_interval")
    if interval is not None:
        figures.append(("Age interval coverage per age group", _png(
            lambda ax: IntervalCoverageDisplay.from_predictions(
                age_true, interval, coverage=predictions.get("coverage"), ax=ax))))
    gender_true = predictions.get("gender_true")
    proba = predictions.get("gender_probability")
    if (gender_true is not None and proba is not None and known_labels(gender_true).any()
            and not np.isnan(np.asarray(proba, dtype=float)).all()):
        figures.append(("Gender reliability", _png(
            lambda ax: GenderReliabilityDisplay.from_predictions(
                gender_true, predictions["gender_pred"], proba, ax=ax))))
    return figures


_STYLE = ("body{font-family:sans-serif;max-width:1300px;margin:2em auto;padding:0 1em}"
          "pre{background:#f6f6f6;padding:1em;overflow-x:auto}"
          "figure{display:inline-block;margin:0 1em 1em 0}img{width:600px;height:auto}")


def evaluation_html(result: dict, predictions: dict, *, title: str | None = None) -> str:
    """One self-contained HTML page: the tables ``evaluate`` prints and the plots.

    Parameters
    ----------
    result : dict
        As for :func:`evaluation_text`.
    predictions : dict of arrays
        ``age_true``, ``age_pred``; optionally ``age_interval`` (None for a model
        without intervals) and ``coverage``, ``gender_true``, ``gender_pred``,
        ``gender_probability`` (as ``evaluate_model(..., return_predictions=True)``
        gives them).
    title : str or None
        The page title; by default names the dataset.

    Returns
    -------
    page : str
        HTML with every figure embedded as a PNG data URL (no other file is read).
    """
    title = title or f"skagegender evaluate: {result.get('dataset', '')}"
    model = result.get("model") or {}
    about = ", ".join(f"{key} {value}" for key, value in model.items())
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Model: {html.escape(about)}</p>" if about else "",
        f"<pre>{html.escape(evaluation_text(result))}</pre>",
    ]
    for caption, url in _figures(predictions):
        parts.append(f'<figure><img src="{url}" alt="{html.escape(caption)}">'
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("</body></html>\n")
    return "\n".join(p for p in parts if p)


def write_evaluation_report(folder: str | PathLike, result: dict, predictions: dict, *,
                            title: str | None = None) -> Path:
    """Write :func:`evaluation_html` to ``folder/index.html`` (folders made as needed).

    Parameters
    ----------
    folder : str or path-like
    result, predictions, title
        As for :func:`evaluation_html`.

    Returns
    -------
    path : pathlib.Path
        The page written.
    """
    page = evaluation_html(result, predictions, title=title).encode("utf-8")
    return atomic_write(Path(folder) / "index.html", lambda file: file.write(page),
                        make_parents=True)
