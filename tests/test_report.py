"""skagegender evaluate --report DIR: one self-contained HTML page, opened in a real browser."""

import html
import os
import re
import shutil
import subprocess

import pytest

pytest.importorskip("matplotlib")

from skagegender.cli import main

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]


def _no_browser(reason):
    """Skip, or fail where the browser is required (.ci/run sets SKAGEGENDER_REQUIRE_BROWSER)."""
    if os.environ.get("SKAGEGENDER_REQUIRE_BROWSER"):
        pytest.fail(f"{reason}, and SKAGEGENDER_REQUIRE_BROWSER is set")
    pytest.skip(reason)


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    _no_browser("no Chromium here (.ci/run installs the Debian packages chromium and "
                "chromium-driver)")


@pytest.mark.slow
@pytest.mark.shared_data
def test_report_page_has_the_printed_table_and_renders_its_figures(shared_data, tmp_path,
                                                                   capsys):
    folder = tmp_path / "new" / "dir"
    assert main(["evaluate", "--dataset", "utkface", "--root", str(shared_data / "UTKFace"),
                 "--limit", "12", "--report", str(folder)]) == 0
    printed = capsys.readouterr()
    page = folder / "index.html"
    assert f"report -> {page}" in printed.err
    text = page.read_text(encoding="utf-8")
    table = html.unescape(re.search(r"<pre>(.*?)</pre>", text, re.DOTALL).group(1))
    assert table == printed.out  # the tables evaluate prints, as printed
    sources = re.findall(r'<img src="([^"]+)"', text)
    assert len(sources) == 4 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r'(src|href)="(?!data:)', text)  # nothing else to fetch

    chromium = _chromium()
    webdriver = pytest.importorskip("selenium.webdriver")
    driver_path = shutil.which("chromedriver")
    if driver_path is None:
        _no_browser("chromium-driver is not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                 "--window-size=1300,1400"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver_path),
                              options=options)
    try:
        driver.get(page.as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => "
            "[i.complete, i.naturalWidth, i.naturalHeight, i.alt])")
        shot = driver.get_screenshot_as_png()
    finally:
        driver.quit()
    assert [alt for *_, alt in images] == ["Predicted against true age", "Error per age group",
                                           "Age interval coverage per age group",
                                           "Gender reliability"]
    assert all(done and width == 600 and height == 450 for done, width, height, _ in images)
    # the screenshot is not blank: the figures' colours are on it
    from io import BytesIO

    from PIL import Image

    pixels = Image.open(BytesIO(shot)).convert("RGB")
    assert len(pixels.getcolors(maxcolors=1 << 20)) > 100


@pytest.mark.slow
@pytest.mark.shared_data
def test_report_of_a_model_without_intervals_or_gender_leaves_those_figures_out(
        shared_data, model_without_intervals, tmp_path, capsys):
    assert main(["evaluate", "--model", model_without_intervals, "--dataset", "fgnet", "--root",
                 str(shared_data / "FGNET"), "--limit", "6", "--report", str(tmp_path)]) == 0
    capsys.readouterr()
    text = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert re.findall(r'alt="([^"]+)"', text) == ["Predicted against true age",
                                                   "Error per age group"]
    assert "80 % age interval: n/a" in text


def test_report_refuses_an_unwritable_folder_before_the_work(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["evaluate", "--dataset", "fgnet", "--root", str(tmp_path / "missing"),
                 "--report", str(blocker / "sub")]) == 2
    assert "--report" in capsys.readouterr().err


@pytest.mark.slow
def test_chromium_flags_start_headless(tmp_path):
    chromium = _chromium()
    page = tmp_path / "p.html"
    page.write_text("<html><body><p id=x>rendered</p></body></html>")
    done = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'u'}",
                           "--dump-dom", page.as_uri()], capture_output=True, text=True,
                          timeout=120, check=False)
    assert '<p id="x">rendered</p>' in done.stdout
