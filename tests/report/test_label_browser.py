"""The labeling page as raters use it, in headless Chromium: two raters, one clicking and one on the keyboard, a
reload mid-way that loses nothing, both exports merged and scored by the commands; hostile prompts and aspect
names stay inert. Skipped without Chromium unless ``FINEXL_REQUIRE_BROWSER=1`` (CI)."""

import json

from selenium.webdriver.common.by import By

from finexl.bench.labels import read_labels
from finexl.cli import main
from tests.report.conftest import HOSTILE, make_hostile
from tests.report.test_browser import check_loaded_offline, open_page, screenshot

DIRECTION = {0: "none", 1: "increase", 2: "decrease"}


def rows(driver):
    return driver.find_elements(By.CSS_SELECTOR, "#questions tr.aspect")


def start(driver, rater: str) -> None:
    field = driver.find_element(By.ID, "rater")
    field.clear()
    field.send_keys(rater)
    driver.find_element(By.ID, "begin").click()


def model_shown(driver) -> str:
    return driver.find_element(By.ID, "model-title").text.split(": ", 1)[1]


def progress(driver) -> str:
    return driver.find_element(By.ID, "progress").text


def export(driver) -> str:
    driver.find_element(By.ID, "export").click()
    return driver.find_element(By.ID, "export-text").get_attribute("value")


def answer_by_clicking(driver, expected: dict, stop_after: int | None = None) -> None:
    """Answer the shown model's aspects in turn: no change, more (moderate), less (slight), ..."""
    model = model_shown(driver)
    for i in range(len(rows(driver)) if stop_after is None else stop_after):
        aspect = rows(driver)[i].get_attribute("data-aspect")
        kind = i % 3
        rows(driver)[i].find_element(By.CSS_SELECTOR, f'button[data-direction="{DIRECTION[kind]}"]').click()
        if kind:
            rows(driver)[i].find_element(By.CSS_SELECTOR, f'button[data-level="{3 - kind}"]').click()
        expected[(model, aspect)] = (DIRECTION[kind], 0 if not kind else 3 - kind)


def test_two_raters_label_two_models_and_their_labels_are_merged_and_scored(browser, red_folder, tmp_path, capsys):
    import shutil

    red = shutil.copytree(red_folder, tmp_path / "red")
    hostile = make_hostile(red_folder, tmp_path / "hostile")
    task = tmp_path / "task"
    assert main(["label", "make", str(red), str(hostile), "--out", str(task), "--pairs", "4"]) == 0
    page = task / "label.html"
    requests = open_page(browser, page)
    check_loaded_offline(browser, page, requests)

    # rater 1 clicks, reloads half-way, and finds every answer where it was
    start(browser, "alice")
    alice_order = [r.get_attribute("data-aspect") for r in rows(browser)]
    expected: dict = {}
    answer_by_clicking(browser, expected)
    first = model_shown(browser)
    browser.find_element(By.ID, "next").click()
    answer_by_clicking(browser, expected, stop_after=5)
    before = progress(browser)
    assert before.startswith(f"{len(alice_order) + 5} of {2 * len(alice_order)}")
    browser.refresh()
    start(browser, "alice")
    assert progress(browser) == before and model_shown(browser) != first  # the same place, nothing lost
    on = [r for r in rows(browser) if r.find_elements(By.CSS_SELECTOR, "button.on")]
    assert len(on) == 5
    answer_by_clicking(browser, expected)
    alice = export(browser)
    lines = [json.loads(x) for x in alice.splitlines()]
    assert len(lines) == 2 * len(alice_order) and {x["rater"] for x in lines} == {"alice"}
    assert {(x["model"], x["aspect"]): (x["direction"], x["level"]) for x in lines} == expected
    screenshot(browser, page, "label.png", tmp_path, height=900)

    # rater 2 on the keyboard: "more", "moderate", next aspect ...; another shuffled order
    browser.refresh()
    start(browser, "bob")
    bob_order = [r.get_attribute("data-aspect") for r in rows(browser)]
    assert sorted(bob_order) == sorted(alice_order) and bob_order != alice_order
    body = browser.find_element(By.TAG_NAME, "body")
    for _model in range(2):
        for _aspect in bob_order:
            body.send_keys("m", "2", "j")
        body.send_keys("]")
    body.send_keys("k", "l", "1")  # back one aspect on the last model: "less", "slight"
    bob = export(browser)
    bob_lines = [json.loads(x) for x in bob.splitlines()]
    assert len(bob_lines) == 2 * len(bob_order)
    assert sum(x["direction"] == "decrease" and x["level"] == 1 for x in bob_lines) == 1
    assert sum(x["direction"] == "increase" and x["level"] == 2 for x in bob_lines) == len(bob_lines) - 1

    # hostile prompts and aspect names are shown as text and run nothing
    found = browser.execute_script(
        "return {pwned: window.pwned === undefined ? null : window.pwned,"
        " marked: document.querySelectorAll('[data-pwned]').length, text: document.body.innerText}"
    )
    assert found["pwned"] is None and found["marked"] == 0
    shown_hostile = model_shown(browser) == "hostile" or first == "hostile"
    assert shown_hostile and "<script>window.pwned = 1</script>" in json.dumps(bob_lines + lines) + found["text"]

    # the commands on the two exports
    (tmp_path / "alice.jsonl").write_text(alice)
    (tmp_path / "bob.jsonl").write_text(bob)
    consensus = tmp_path / "consensus.jsonl"
    capsys.readouterr()
    assert (
        main(
            [
                "label",
                "merge",
                str(tmp_path / "alice.jsonl"),
                str(tmp_path / "bob.jsonl"),
                "--task",
                str(task),
                "--out",
                str(consensus),
                "--resamples",
                "100",
            ]
        )
        == 0
    )
    assert "2 raters (alice, bob)" in capsys.readouterr().out
    assert len(read_labels(consensus)) == 2 * len(alice_order)
    assert main(["bench", "score", str(consensus), str(red), str(hostile)]) == 0
    printed = capsys.readouterr().out
    assert "template sentences" in printed and "rater ceiling" in printed
    assert f"colour {HOSTILE}" in printed  # the hostile model's aspects, scored by name
