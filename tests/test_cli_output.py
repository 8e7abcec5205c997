"""predict's plain line is explained where users look; a model without intervals says n/a."""

import re

import pytest

from skagegender.cli import build_parser, main


def _help(command):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return sub.format_help()


@pytest.mark.slow
def test_predict_help_explains_every_part_of_the_plain_line():
    text = " ".join(_help("predict").split())
    example = re.search(r"'(PATH face N: age .*?)'", text).group(1)
    assert example.startswith("PATH face N: age 31 (25-38), female (93%), box [x1,y1,x2,y2]")
    for words in ("age interval that holds the true age with probability --coverage",
                  "predicted gender and its probability", "box in pixels",
                  "detector's confidence", "no face found"):
        assert words in text, words


@pytest.mark.slow
def test_the_explained_line_is_what_predict_prints(portrait, capsys):
    assert main(["predict", portrait]) == 0
    line = capsys.readouterr().out.strip()
    # the help's example with its placeholders as patterns
    pattern = (r"\S+ face 1: age \d+ \(\d+-\d+\), (female|male) \(\d+%\), "
               r"box \[\d+,\d+,\d+,\d+\], score (0\.\d\d|1\.00)")
    assert re.fullmatch(pattern, line), line


@pytest.mark.slow
def test_coverage_with_a_model_without_intervals_warns(portrait, model_without_intervals,
                                                        capsys):
    model = model_without_intervals
    assert main(["predict", "--model", model, "--coverage", "0.9", portrait]) == 0
    captured = capsys.readouterr()
    assert "--coverage 0.9: this model's age head gives no age intervals" in captured.err
    assert re.search(r"age \d+, (female|male)", captured.out)  # no interval printed
    assert main(["predict", "--model", model, portrait]) == 0
    assert "warning" not in capsys.readouterr().err  # not asked for: no warning
    assert main(["predict", "--coverage", "0.9", portrait]) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err and re.search(r"age \d+ \(\d+-\d+\)", captured.out)


@pytest.mark.slow
@pytest.mark.shared_data
def test_evaluate_says_na_for_a_model_without_intervals(shared_data, model_without_intervals,
                                                       capsys):
    root = str(shared_data / "FGNET")
    assert main(["evaluate", "--model", model_without_intervals, "--dataset", "fgnet", "--root", root,
                 "--limit", "4"]) == 0
    captured = capsys.readouterr()
    assert "80 % age interval: n/a" in captured.out and "coverage 0.0" not in captured.out
    assert "gives no age intervals" in captured.err
    assert main(["evaluate", "--model", model_without_intervals, "--dataset", "fgnet",
                 "--root", root, "--limit", "4", "--json"]) == 0
    import json

    result = json.loads(capsys.readouterr().out)
    assert result["interval_coverage"] is None and result["interval_width"] is None
    assert main(["evaluate", "--dataset", "fgnet", "--root", root, "--limit", "4"]) == 0
    assert re.search(r"80 % age interval: coverage \d+\.\d%", capsys.readouterr().out)
