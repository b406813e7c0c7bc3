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

    table = browser.find_element(By.ID, "leaderboard")
    headers = [th.get_attribute("id") for th in table.find_elements(By.CSS_SELECTOR, "thead th")]
    score_column = headers.index("col-score")

    def column(index: int) -> list[str]:
        return browser.execute_script(
            "return Array.from(document.querySelectorAll('#leaderboard tbody tr.method-row'))"
            ".map(r => r.cells[arguments[0]].getAttribute('data-value'));",
            index,
        )

    assert len(table.find_elements(By.CSS_SELECTOR, "tbody tr.method-row")) == len(methods)
    assert [float(v) for v in column(score_column)] == [r["mean"] for r in rows]  # ranked best first

    header = browser.find_element(By.ID, "col-score")
    header.click()
    ascending = [float(v) for v in column(score_column)]
    assert ascending == sorted(r["mean"] for r in rows)
    assert header.get_attribute("aria-sort") == "ascending"
    header.click()
    assert [float(v) for v in column(score_column)] == sorted(ascending, reverse=True)
    assert header.get_attribute("aria-sort") == "descending"

    method_column = headers.index("col-method")
    browser.find_element(By.ID, "col-method").click()
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
