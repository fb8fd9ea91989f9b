"""The report and the compare page as a person sees them: in a real headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by selenium; no browser download). Skipped where no Chromium is installed, unless
``FINEXL_REQUIRE_BROWSER=1`` (CI), where a missing browser fails. ``FINEXL_SCREENSHOT_DIR`` keeps the screenshots."""

import json
import os
import shutil
from pathlib import Path

import pytest

from finexl.report import write_compare


def open_page(driver, path: Path) -> list[str]:
    """Load ``path``; returns the URL of every request the page made (from the DevTools network log)."""
    driver.get_log("performance")  # drop what earlier pages logged
    driver.get(path.resolve().as_uri())
    requests = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            requests.append(message["params"]["request"]["url"])
    return requests


def check_loaded_offline(driver, path: Path, requests: list[str]) -> None:
    assert path.resolve().as_uri() in requests  # the log works: it saw the page itself
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    broken = driver.execute_script(
        "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length"
    )
    assert broken == 0


def screenshot(driver, path: Path, name: str, tmp_path: Path, height: int | None = None) -> Path:
    """The page (the top ``height`` pixels, else all of it) as ``name``; kept in ``$FINEXL_SCREENSHOT_DIR``. The
    README's image is ``FINEXL_SCREENSHOT_DIR=docs/images pytest tests/report/test_browser.py``: the default
    command's page, as the test sees it."""
    if height is None:
        driver.set_window_size(1100, 400)  # the page's own height, not the last window's
        height = min(int(driver.execute_script("return document.documentElement.scrollHeight")) + 40, 6000)
    driver.set_window_size(1100, height)
    driver.execute_script("window.scrollTo(0, 0)")
    out = tmp_path / name
    assert driver.save_screenshot(str(out)) and out.stat().st_size > 10_000
    keep = os.environ.get("FINEXL_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(out, Path(keep) / name)
    return out


def text(element) -> str:
    return element.get_attribute("textContent").strip()


def test_the_report_in_a_browser(browser, red_folder, tmp_path):
    from selenium.webdriver.common.by import By

    path = red_folder / "report.html"
    check_loaded_offline(browser, path, open_page(browser, path))
    expl = json.loads((red_folder / "explanation.json").read_text())
    rows = browser.find_elements(By.CSS_SELECTOR, "#chart g.row")
    assert [r.get_attribute("data-aspect") for r in rows] == [a["aspect"] for a in expl["aspects"]]
    for row, a in zip(rows, expl["aspects"], strict=True):
        bar = row.find_element(By.CSS_SELECTOR, "rect.bar")
        assert float(bar.get_attribute("width")) == pytest.approx(400 * a["score"], abs=0.06)
        assert ("changed" in row.get_attribute("class").split()) == a["changed"]
    for a in expl["aspects"]:  # the table's numbers are the JSON's
        row = browser.find_element(By.CSS_SELECTOR, f'#scores tr[data-aspect="{a["aspect"]}"]')
        assert text(row.find_element(By.CSS_SELECTOR, '[data-field="score"]')) == f"{a['score']:.3f}"
        low, high = a["interval"]
        assert text(row.find_element(By.CSS_SELECTOR, '[data-field="interval"]')) == f"[{low:.3f}, {high:.3f}]"
        assert text(row.find_element(By.CSS_SELECTOR, '[data-field="verdict"]')) == (
            "CHANGED" if a["changed"] else "-"
        )
    changed = [a["aspect"] for a in expl["aspects"] if a["changed"]]
    assert changed and len(browser.find_elements(By.CSS_SELECTOR, "img.mean-map")) == len(changed)
    assert browser.find_element(By.ID, "verdict").text.startswith(f"Changes {changed[0]}")
    screenshot(browser, path, "report.png", tmp_path, height=1640)  # the top, as it opens: shown in the README
    visible = [p for p in browser.find_elements(By.CSS_SELECTOR, "figure.pair") if p.is_displayed()]
    assert len(visible) == 8  # the rest a click away
    browser.find_element(By.CSS_SELECTOR, "#pairs + details > summary").click()
    assert len([p for p in browser.find_elements(By.CSS_SELECTOR, "figure.pair") if p.is_displayed()]) == 16
    screenshot(browser, path, "report-full.png", tmp_path)


def test_the_compare_page_in_a_browser(browser, red_folder, tmp_path):
    from selenium.webdriver.common.by import By

    other = shutil.copytree(red_folder, tmp_path / "red-again")
    data = json.loads((other / "explanation.json").read_text())
    data["aspects"][0]["score"] = 0.25  # a second model, weaker on the first aspect
    (other / "explanation.json").write_text(json.dumps(data))
    page = write_compare([red_folder, other], tmp_path / "compare.html")
    check_loaded_offline(browser, page, open_page(browser, page))
    first = data["aspects"][0]["aspect"]
    entries = browser.find_elements(By.CSS_SELECTOR, f'#chart g.aspect[data-aspect="{first}"] g.entry')
    original = json.loads((red_folder / "explanation.json").read_text())["aspects"][0]["score"]
    assert [e.get_attribute("data-score") for e in entries] == [f"{original:.3f}", "0.250"]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#models li")) == 2
    screenshot(browser, page, "compare.png", tmp_path)


INJECTED = """return {
  pwned: window.pwned === undefined ? null : window.pwned,
  scripts: document.querySelectorAll('script').length,
  marked: document.querySelectorAll('[data-pwned]').length,
  handlers: document.querySelectorAll('[onerror]').length,
  js_links: document.querySelectorAll('a[href^="javascript"]').length,
  text: document.body.textContent,
}"""


def test_hostile_text_in_every_field_is_inert_and_shown(browser, red_folder, tmp_path):
    """Hostile markup in every free-text field of an explanation: the report, the compare page and the card
    (rendered as GitHub renders Markdown, raw HTML allowed) inject no element and run no script, even with the
    pages' Content-Security-Policy taken out; the text itself is shown."""
    from markdown_it import MarkdownIt

    from finexl.report import model_card, write_report

    from .conftest import HOSTILE, make_hostile

    folder = make_hostile(red_folder, tmp_path / "hostile")
    report = write_report(folder, overwrite=True)
    compare = write_compare([folder, make_hostile(red_folder, tmp_path / "hostile-2")], tmp_path / "compare.html")
    card = model_card(folder, overwrite=True).read_text()
    card_page = tmp_path / "card.html"
    card_page.write_text("<!DOCTYPE html><meta charset=utf-8><body>" + MarkdownIt("commonmark", {"html": True})
                         .enable("table").render(card) + "</body>")  # fmt: skip
    pages = [report, compare, card_page]
    for page in (report, compare):  # the same pages without their CSP: escaping alone must hold
        bare = tmp_path / f"bare-{page.name}"
        html = page.read_text()
        assert "Content-Security-Policy" in html
        bare.write_text("\n".join(line for line in html.splitlines() if "Content-Security-Policy" not in line))
        pages.append(bare)
    for page in pages:
        open_page(browser, page)
        found = browser.execute_script(INJECTED)
        assert (found["pwned"], found["scripts"], found["marked"], found["handlers"], found["js_links"]) == (
            None, 0, 0, 0, 0), page.name  # fmt: skip
        assert "<script>window.pwned = 1</script>" in found["text"], page.name  # shown as text
        assert "[link](javascript:window.pwned=3)" in found["text"] or page.name != "card.html"
    open_page(browser, report)
    from selenium.webdriver.common.by import By

    assert HOSTILE in browser.find_element(By.ID, "sentences").get_attribute("textContent")
    assert browser.find_element(By.ID, "chart").get_attribute("data-aspect") is None
    aspects = [g.get_attribute("data-aspect") for g in browser.find_elements(By.CSS_SELECTOR, "#chart g.row")]
    assert aspects and all(a.endswith(HOSTILE) for a in aspects)  # attributes hold the text, not markup
