"""The HTML leaderboard in a real headless Chromium: it renders, sorts by a clicked column, filters by
method name, and shows a hostile method name as plain text without running it."""

from __future__ import annotations

import shutil
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ddrank.evaluation import Evaluation, RoundResult, Run
from ddrank.metrics import hard_label_recovery, improvement_over_random, label_robust_score
from ddrank.report.leaderboard import build_leaderboard
from ddrank.report.render import render

XSS = "<script>alert(1)</script>"
SEEDS = (11, 22, 33, 44, 55)
INSTALL = (
    "the browser test needs Chromium and its WebDriver: install Debian's chromium and chromium-driver "
    "(apt-get install -y chromium chromium-driver) and the dev extra (pip install -e '.[dev]', for selenium)"
)
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,1400",
)


def evaluation(method: str, acc_syn: float, acc_random: float = 0.62, acc_real: float = 0.95) -> Evaluation:
    """A demo-like LRS evaluation (digits, IPC 10, five rounds)."""
    wiggle = np.random.default_rng(zlib.crc32(method.encode())).uniform(-0.004, 0.004, len(SEEDS))
    rounds = []
    for r, seed in enumerate(SEEDS):
        syn = acc_syn + float(wiggle[r])
        hlr, ior = hard_label_recovery(acc_real, syn), improvement_over_random(syn, acc_random)
        values = {"acc_syn": syn, "acc_random": acc_random, "acc_real": acc_real, "hlr": hlr, "ior": ior}
        runs = {"syn": [Run(0.01, syn, 0.5, syn)], "random": [Run(0.01, acc_random, 0.5, acc_random)]}
        rates = {"syn": 0.01, "random": 0.01}
        rounds.append(RoundResult(r, seed, values | {"lrs": label_robust_score(hlr, ior)}, rates, runs))
    protocol = ("digits", "5f1c0ffee0ddba11", "ConvNet-2-W16", "hard", "honest")
    return Evaluation(method, "digits", 10, "lrs", 0.5, *protocol, rounds, "trained", {"base_seed": 0})


def _require(*names: str) -> str:
    """The first of ``names`` found on PATH; the test fails (never skips) when none is."""
    for name in names:
        if path := shutil.which(name):
            return path
    pytest.fail(f"{' or '.join(names)} not found on PATH: {INSTALL}", pytrace=False)


@contextmanager
def headless_chromium(profile: Path) -> Iterator[Any]:
    """Headless Chromium with its network features off and a fresh profile; fails when not installed."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail(f"selenium is not installed: {INSTALL}", pytrace=False)
    binary = _require("chromium", "chromium-browser")
    driver_path = _require("chromedriver")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.unhandled_prompt_behavior = "ignore"  # an alert stays open, so the test can see it
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        driver.set_page_load_timeout(15)
        yield driver
    finally:
        driver.quit()


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "the screenshot is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_leaderboard_page_in_headless_chromium(tmp_path):
    methods = {"dm": 0.80, "kcenter": 0.74, XSS: 0.70, "random": 0.62, "noise": 0.20}
    rows = build_leaderboard([evaluation(m, acc) for m, acc in methods.items()])
    page = tmp_path / "leaderboard.html"
    page.write_text(render(rows, "html"), encoding="utf-8")
    with headless_chromium(tmp_path / "profile") as browser:
        browser.get(page.as_uri())
        _check_page(browser, tmp_path, methods, rows)


def _check_page(browser: Any, tmp_path: Path, methods: dict[str, float], rows: list[dict[str, Any]]) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    def no_alert() -> None:
        with pytest.raises(NoAlertPresentException):
            browser.switch_to.alert  # noqa: B018 (the property access is the check)

    no_alert()
    shot = tmp_path / "leaderboard.png"
    assert browser.save_screenshot(str(shot))
    data = shot.read_bytes()
    width, height = _png_size(data)
    assert width >= 800 and height >= 600 and len(data) > 20_000

    table = browser.find_element(By.ID, "leaderboard-0")
    headers = [th.get_attribute("id") for th in table.find_elements(By.CSS_SELECTOR, "thead th")]
    score_column = headers.index("col-score-0")

    def column(index: int) -> list[str]:
        return browser.execute_script(
            "return Array.from(document.querySelectorAll('#leaderboard-0 tbody tr.method-row'))"
            ".map(r => r.cells[arguments[0]].getAttribute('data-value'));",
            index,
        )

    assert len(table.find_elements(By.CSS_SELECTOR, "tbody tr.method-row")) == len(methods)
    assert [float(v) for v in column(score_column)] == [r["mean"] for r in rows]  # ranked best first

    header = browser.find_element(By.ID, "col-score-0")
    header.click()
    ascending = [float(v) for v in column(score_column)]
    assert ascending == sorted(r["mean"] for r in rows)
    assert header.get_attribute("aria-sort") == "ascending"
    header.click()
    assert [float(v) for v in column(score_column)] == sorted(ascending, reverse=True)
    assert header.get_attribute("aria-sort") == "descending"

    method_column = headers.index("col-method-0")
    browser.find_element(By.ID, "col-method-0").click()
    assert column(method_column) == sorted(methods)

    box = browser.find_element(By.ID, "filter")
    box.send_keys("m")  # dm, random
    visible = [
        r.find_element(By.CSS_SELECTOR, "td.method").text
        for r in table.find_elements(By.CSS_SELECTOR, "tbody tr.method-row")
        if r.is_displayed()
    ]
    assert sorted(visible) == ["dm", "random"]
    assert "2 of 5" in browser.find_element(By.ID, "shown").text
    box.clear()
    box.send_keys("script")
    shown = [r for r in table.find_elements(By.CSS_SELECTOR, "tbody tr.method-row") if r.is_displayed()]
    assert len(shown) == 1
    cell = shown[0].find_element(By.CSS_SELECTOR, "td.method")
    assert browser.execute_script("return arguments[0].innerText;", cell) == XSS
    assert cell.find_elements(By.TAG_NAME, "script") == []
    assert len(browser.find_elements(By.TAG_NAME, "script")) == 1  # the page's own script only
    no_alert()


def _soft(e: Evaluation) -> Evaluation:
    """The same evaluation under a teacher's soft labels (another protocol, another group)."""
    e.labels, e.protocol, e.protocol_hash = "S", "digits-kd", "0ddba11c0ffee5f1"
    return e


def test_page_has_a_panel_per_group_readable_plots_and_fits_a_phone(tmp_path):
    methods = {"dm": 0.80, "kcenter": 0.74, XSS: 0.70, "random": 0.62, "noise": 0.20}
    evaluations = [evaluation(m, acc) for m, acc in methods.items()]
    evaluations += [_soft(evaluation(m, min(0.9, acc + 0.1), acc_random=0.75)) for m, acc in methods.items()]
    rows = build_leaderboard(evaluations)
    page = tmp_path / "leaderboard.html"
    page.write_text(render(rows, "html"), encoding="utf-8")
    with headless_chromium(tmp_path / "profile") as browser:
        browser.get(page.as_uri())
        _check_panels_and_labels(browser)
        browser.set_window_size(420, 900)
        browser.get(page.as_uri())
        overflow = browser.execute_script(
            "return [document.documentElement.scrollWidth, document.documentElement.clientWidth];"
        )
        assert overflow[0] <= overflow[1], f"the page scrolls sideways at 420 px: {overflow}"
        wrap = browser.execute_script(
            "var w = document.querySelector('.table-wrap'); return [w.scrollWidth, w.clientWidth];"
        )
        assert wrap[0] > wrap[1]  # the wide table scrolls inside its own box


def _check_panels_and_labels(browser: Any) -> None:
    from selenium.webdriver.common.by import By

    headings = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "section.group h2")]
    assert any("hard labels" in h for h in headings) and any("S labels" in h for h in headings)
    assert "Across groups" in headings  # the hard against soft labels gap
    # each group's rows in its own table, under its heading; choosing a group shows only its section
    sections = browser.find_elements(By.CSS_SELECTOR, "section.group[data-group]")
    assert len(sections) == 2
    for section in sections:
        labels = {r.get_attribute("data-group") for r in section.find_elements(By.CSS_SELECTOR, "tr")[1:]}
        assert labels == {section.find_element(By.TAG_NAME, "h2").text}
        assert len(section.find_elements(By.CSS_SELECTOR, "table.leaderboard tbody tr")) == 5
    assert "10 of 10 rows shown" in browser.find_element(By.ID, "shown").text
    choice = sections[1].get_attribute("data-group")
    browser.execute_script(
        "var s = document.getElementById('group'); s.value = arguments[0];"
        "s.dispatchEvent(new Event('change'));",
        choice,
    )
    assert not sections[0].is_displayed() and sections[1].is_displayed()
    assert "5 of 10 rows shown" in browser.find_element(By.ID, "shown").text
    browser.execute_script(
        "var s = document.getElementById('group'); s.value = ''; s.dispatchEvent(new Event('change'));"
    )
    page_text = browser.find_element(By.TAG_NAME, "body").text
    assert "neutral LRS = 26.89%" in page_text and "acc(real) %" in page_text
    assert browser.find_elements(By.TAG_NAME, "h1")[0].text.count("LRS") == 1
    # In every plot, no two text labels overlap and none is smaller than 8 px on a 1280 px screen.
    overlaps = browser.execute_script(
        """
        var out = [];
        document.querySelectorAll('figure svg').forEach(function (svg, s) {
          var boxes = Array.from(svg.querySelectorAll('text')).map(function (t) {
            var r = t.getBoundingClientRect();
            return {x0: r.left, y0: r.top, x1: r.right, y1: r.bottom, h: r.height, text: t.textContent};
          }).filter(function (b) { return b.x1 > b.x0 && b.text.trim(); });
          boxes.forEach(function (a, i) {
            if (a.h < 8) { out.push([s, a.text, 'small', a.h]); }
            boxes.slice(i + 1).forEach(function (b) {
              var w = Math.min(a.x1, b.x1) - Math.max(a.x0, b.x0);
              var h = Math.min(a.y1, b.y1) - Math.max(a.y0, b.y0);
              if (w > 1 && h > 1) { out.push([s, a.text, b.text]); }
            });
          });
        });
        out.push(document.querySelectorAll('figure svg text').length);
        return out;
        """
    )
    assert overlaps[-1] > 50 and overlaps[:-1] == [], overlaps  # labels were found, none overlaps
