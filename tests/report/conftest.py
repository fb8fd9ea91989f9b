import os
import shutil

import pytest

HOSTILE = ('<script>window.pwned = 1</script>"><img src=x onerror="window.pwned = 2" data-pwned="1">'
           "'><b data-pwned=\"1\">b</b> [link](javascript:window.pwned=3) **x** | y")  # fmt: skip


def make_hostile(red_folder, dst):
    """A copy of the red explanation whose every free-text field holds :data:`HOSTILE` (prompts, concept phrases and
    names, aspect and group names, bank name, model ids and paths, tags, sentences, settings)."""
    import json
    import shutil

    folder = shutil.copytree(red_folder, dst)
    e = json.loads((folder / "explanation.json").read_text())
    tag = lambda s: f"{s} {HOSTILE}"  # noqa: E731
    for a in e["aspects"]:
        a.update(aspect=tag(a["aspect"]), group=tag(a["group"]), concept=tag(a["concept"]), toward=tag(a["toward"]))
        if a.get("accounted_for"):
            a["accounted_for"] = {tag(k): v for k, v in a["accounted_for"].items()}
    for c in e["concepts"]:
        c.update(phrase=tag(c["phrase"]), aspect=tag(c["aspect"]))
    e["concept_bank"].update(name=tag("bank"), aspects=[tag(a) for a in e["concept_bank"]["aspects"]],
                             digest=tag("digest"), proposal_note=tag("note"))  # fmt: skip
    e["models"]["personalized"].update(lora=tag("lora"), fingerprint=tag("fp"))
    e["models"]["base"].update(path=tag("base"), fingerprint=tag("fp"))
    e["models"]["clip"].update(name=tag("clip"), fingerprint=tag("fp"))
    e["sentences"]["text"] = "\n".join(f"- {tag(line)}" for line in e["sentences"]["text"].splitlines())
    e["settings"].update(prompts=[tag("prompt")], collection={"entry": {"id": tag("id"), "tags": [tag("t")]}})
    e["method"] = e["method"]  # a known method: the schema names them
    e["sweep"] = {  # a weight sweep over the hostile aspect names: its charts are drawn from them too
        "scales": [0.5, 1.0],
        "pairs": [8, 8],
        "aspects": {
            a["aspect"]: {
                "score": [a["score"] / 2, a["score"]],
                "interval": [[x / 2 for x in a["interval"]], a["interval"]],
                "direction": [a["direction"]] * 2,
                "changed": [False, a["changed"]],
                "onset": 1.0 if a["changed"] else None,
                "steady": True,
            }
            for a in e["aspects"]
        },
    }
    e["trigger"] = {  # a trigger record: the word and the prompts hostile too
        "word": tag("w"), "source": tag("s"), "example": {"base": tag("p"), "with": tag("w p"), "without": tag("p")},
        "pairs": 8, "leaked": [e["aspects"][0]["aspect"]],
        "leak": {a["aspect"]: {"score": 0.1, "interval": [0.05, 0.15], "threshold": 0.1, "direction": "increase",
                               "toward": a["toward"], "changed": False} for a in e["aspects"]},
    }  # fmt: skip
    e["stack"] = {  # a stack record over the hostile aspect names and LoRA paths
        "loras": [{"lora": tag("a"), "scale": 1.0}, {"lora": tag("b"), "scale": 0.5}],
        "pairs": 8,
        "confidence": 0.9,
        "aspects": {
            a["aspect"]: {"toward": a["toward"], "stack": 0.1, "alone": [0.05, 0.04], "sum": 0.09,
                          "interaction": 0.01, "interval": [-0.01, 0.03],
                          "changed": {"stack": True, "alone": [True, False]}, "verdict": "additive"}
            for a in e["aspects"]
        },
    }  # fmt: skip
    (folder / "explanation.json").write_text(json.dumps(e))
    samples = json.loads((folder / "samples" / "samples.json").read_text())
    samples["prompts"] = [tag(p) for p in samples["prompts"]]
    samples["moves"] = {tag(k): v for k, v in samples["moves"].items()}
    (folder / "samples" / "samples.json").write_text(json.dumps(samples))
    return folder


REQUIRED = os.environ.get("FINEXL_REQUIRE_BROWSER") == "1"


def _find(*names):
    return next((p for p in map(shutil.which, names) if p), None)


@pytest.fixture(scope="module")
def browser():
    chromium, driver_path = _find("chromium", "chromium-browser"), _find("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        chromium = None
    if not (chromium and driver_path):
        if REQUIRED:
            pytest.fail("FINEXL_REQUIRE_BROWSER=1 but chromium, chromedriver or selenium is missing")
        pytest.skip("no chromium/chromedriver/selenium here (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1100,900",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()
