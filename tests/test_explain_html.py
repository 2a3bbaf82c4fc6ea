"""`voltrace explain --html`: a self-contained waterfall that headless Chromium draws offline."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require
from tests.support import png
from tests.support.demo_run import PROJECT, DemoRun, demo_run
from voltrace.cli import main
from voltrace.explain.html import ERROR_CSS

NOVA_BLUE, CINDER_PURPLE = "#4e79a7", "#9c6ade"
# Anything that would make a browser fetch something.
EXTERNAL = re.compile(
    r"<(script|link|img|iframe|object|embed|audio|video|source)\b|"
    r"\bsrc\s*=|url\(|@import|@font-face",
    re.IGNORECASE,
)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    done = demo_run(tmp_path_factory)
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def report(run: DemoRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """explain --html for the over-quota create: both services, one failing stage."""
    path = tmp_path_factory.mktemp("html") / "over-quota.html"
    code = main(
        [
            "explain",
            str(run.out / "traces.jsonl"),
            "--request-id",
            run.request_id("over-quota"),
            "--html",
            str(path),
            "--json",
        ]
    )
    assert code == 0
    return path


def rgb(css: str) -> bytes:
    return bytes.fromhex(css.lstrip("#"))


def test_html_loads_nothing_from_anywhere(report, run):
    """No script, stylesheet, font or image reference: the page is one file."""
    for page in (report, run.out / "report.html"):
        text = page.read_text()
        assert text.startswith("<!DOCTYPE html>")
        assert not EXTERNAL.search(text), EXTERNAL.search(text)
        assert "<style>" in text


def test_html_holds_the_diagnosis_and_every_span(report, run):
    """The page names the failure, the next step, and has a row per span of the trace."""
    text = report.read_text()
    assert "over_quota at call_cinder" in text
    assert f"openstack quota show --volume {PROJECT}" in text
    assert run.request_id("over-quota") in text
    assert text.count('<div class="track"') == 11  # server, pipeline, 5 stages, client, 3 cinder
    assert text.count('class="name error failed"') == 1
    demo_page = (run.out / "report.html").read_text()
    assert demo_page.count('<section class="create') == len(run.summary)
    for row in run.summary:
        assert f"{row['scenario']}:" in demo_page


def chromium_screenshot(page: Path, target: Path, size: str = "900,700") -> None:
    """Headless Chromium with no network: its own network namespace when it may have one,
    and in any case a dead proxy and a resolver that resolves nothing."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    require(browser is not None, "Debian's chromium is needed to open the HTML report")
    assert browser is not None
    isolate: list[str] = []
    if (
        shutil.which("unshare")
        and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0
    ):
        isolate = ["unshare", "-n"]
    subprocess.run(
        [
            *isolate,
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--proxy-server=127.0.0.1:9",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            f"--user-data-dir={target.parent / 'chromium-profile'}",
            f"--window-size={size}",
            f"--screenshot={target}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=90,
        check=True,
    )


def test_headless_chromium_draws_the_waterfall_offline(report, tmp_path):
    """Offline Chromium renders bars in both services' colours and the failing one in red."""
    shot = tmp_path / "report.png"
    chromium_screenshot(report, shot)
    image = png.Screenshot(shot)
    assert (image.width, image.height) == (900, 700)
    # The waterfall starts with the server span's bar, across the whole track; the
    # legend and the red status badge sit above it, so look only below.
    top = image.first_row_with_run(rgb(NOVA_BLUE), 150)
    assert image.longest_run(rgb(ERROR_CSS), below=top) >= 40  # call_cinder, the failed stage
    assert image.count(rgb(CINDER_PURPLE), below=top) >= 3 * 8  # three cinder-api bars
    assert image.count(rgb(NOVA_BLUE), below=top) > image.count(rgb(CINDER_PURPLE), below=top)
