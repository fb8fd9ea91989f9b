"""Narrate an explanation: templated by default; with an LLM, checked for faithfulness, retried, else templated.

The LLM sees only the structured scores (no images, no free text of ours beyond the instructions), is asked for one
line per changed aspect, and its answer must pass :func:`finexl.narrate.faithfulness.check`. On failure it is told
what was wrong and asked again (``retries`` times); then finexl falls back to the template and says so.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field

from finexl.chat import LLMError, make_chat
from finexl.narrate.faithfulness import check
from finexl.narrate.templates import band, render
from finexl.utils import default_cache_dir

logger = logging.getLogger(__name__)

SYSTEM = (
    "You write short, exact descriptions of how a personalized image model differs from its base model. You are "
    "given measured scores as JSON. Use only what the JSON says: never add an aspect, never change a direction, "
    "always use the given level word (slight, moderate or strong), and quote numbers only as given."
)
INSTRUCTIONS = (
    "Write one line per changed aspect, in the form '<aspect>: <sentence>', in the order given. Each sentence says "
    "the level word, the direction ('more X' for an increase, 'less X' for a decrease) and may quote the score and "
    "interval. Mention an unchanged aspect only if it is listed under 'asked_unchanged', and then call it "
    "unchanged. If nothing changed, write exactly: No significant change."
)


@dataclass
class Narration:
    text: str
    source: str  # "template" or "llm"
    form: str
    attempts: int = 0
    note: str | None = None
    problems: list[list[str]] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def scores_for_llm(expl: dict, asked: list[str] | None = None) -> dict:
    """The structured scores the LLM sees."""
    changed = [
        {
            "aspect": a["aspect"],
            "group": a["group"],
            "level": band(a["score"]),
            "direction": a["direction"],
            "concept": a["concept"],
            "toward": a["toward"],
            "score": round(a["score"], 2),
            "interval": [round(x, 2) for x in a["interval"]],
        }
        for a in expl["aspects"]
        if a["changed"]
    ]
    asked_unchanged = [a["aspect"] for a in expl["aspects"] if not a["changed"] and a["aspect"] in (asked or [])]
    return {"changed": changed, "asked_unchanged": asked_unchanged}


def narration_messages(expl: dict, asked: list[str] | None = None) -> list[dict]:
    payload = json.dumps(scores_for_llm(expl, asked), indent=1)
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"{INSTRUCTIONS}\n\nScores:\n{payload}"},
    ]


def narrate(
    expl: dict, backend=None, form: str = "bullets", asked: list[str] | None = None, retries: int = 2
) -> Narration:
    """Sentences for ``expl``: templated without ``backend``; else the LLM's, if faithful, else templated."""
    template = render(expl, form, asked)
    if backend is None:
        return Narration(template, "template", form)
    messages = narration_messages(expl, asked)
    problems: list[list[str]] = []
    for attempt in range(1, retries + 2):
        try:
            reply = backend.chat(messages)
        except LLMError as err:
            logger.warning("LLM narration failed: %s; using the templated sentences", err)
            return Narration(
                template, "template", form, attempt, f"LLM failed ({err}); templated sentences used", problems
            )
        report = check(reply, expl)
        if report.ok:
            return Narration(reply.strip(), "llm", form, attempt, None, problems)
        problems.append(report.problems)
        logger.info("LLM answer %d failed the faithfulness check: %s", attempt, report.problems)
        messages = [
            *messages,
            {"role": "assistant", "content": reply},
            {
                "role": "user",
                "content": "These statements are not supported by the scores: "
                + "; ".join(report.problems)
                + ". Rewrite all lines following the rules.",
            },
        ]
    note = (
        f"LLM answers failed the faithfulness check {retries + 1} times ({'; '.join(problems[-1])}); "
        "templated sentences used"
    )
    logger.warning(note)
    return Narration(template, "template", form, retries + 1, note, problems)


def narrate_explanation(
    expl,
    form: str = "bullets",
    asked: list[str] | None = None,
    llm: str | None = None,
    llm_endpoint: str | None = None,
    llm_model: str | None = None,
    timeout: float = 60.0,
    retries: int = 2,
    cache_dir: str | None = None,
    device: str = "cpu",
    api_key_env: str | None = None,
) -> Narration:
    """Sentences for an explanation (an :class:`~finexl.explanation.result.Explanation` or its dict): templated,
    or by the chat model named (a local folder ``llm`` or an endpoint), falling back to the template with a note
    when that model cannot be used."""

    expl = expl if isinstance(expl, dict) else expl.to_dict()
    try:
        backend = make_chat(
            llm,
            llm_endpoint,
            llm_model,
            cache_dir or default_cache_dir(),
            timeout=timeout,
            device=device,
            api_key_env=api_key_env,
        )
    except LLMError as err:
        return Narration(
            render(expl, form, asked), "template", form, 0, f"LLM unavailable ({err}); templated sentences used"
        )
    return narrate(expl, backend, form, asked, retries=retries)
