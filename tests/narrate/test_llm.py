"""The LLM narrator through a real HTTP endpoint and a tiny random local transformers chat model."""

import json

import numpy as np
import pytest

from finexl.chat import EndpointChat, LLMError, LocalChat
from finexl.narrate.narrator import narrate, narration_messages
from finexl.narrate.templates import render

from .conftest import FAITHFUL


def test_faithful_endpoint_answer_is_used_and_cached(chat_server, expl, tmp_path):
    backend = EndpointChat(chat_server.url, "good", cache_dir=tmp_path)
    result = narrate(expl, backend)
    assert result.source == "llm" and result.text == FAITHFUL and result.attempts == 1
    sent = chat_server.requests[0]["messages"]
    payload = json.loads(sent[-1]["content"].split("Scores:\n", 1)[1])  # only the structured scores
    assert [a["aspect"] for a in payload["changed"]] == ["colour", "blur"]
    assert payload["changed"][1]["level"] == "moderate" and payload["asked_unchanged"] == []
    again = narrate(expl, EndpointChat(chat_server.url, "good", cache_dir=tmp_path))
    assert again.text == FAITHFUL and len(chat_server.requests) == 1  # answered from the disk cache


def test_unfaithful_answer_is_retried_then_replaced_by_the_template(chat_server, expl):
    fixed = narrate(expl, EndpointChat(chat_server.url, "fix-on-retry"), retries=2)
    assert fixed.source == "llm" and fixed.attempts == 2 and "level slight" in fixed.problems[0][0]
    retry = chat_server.requests[-1]["messages"]
    assert retry[-2]["role"] == "assistant" and "not supported by the scores" in retry[-1]["content"]
    wrong = narrate(expl, EndpointChat(chat_server.url, "wrong"), retries=1)
    assert wrong.source == "template" and wrong.attempts == 2
    assert wrong.text == render(expl, "bullets") and "faithfulness check" in wrong.note


@pytest.mark.parametrize(
    "model, message",
    [("error", "HTTP 500"), ("malformed", "malformed"), ("refuse", "refused"), ("slow", "timed out")],
)
def test_endpoint_failures_are_named_and_the_template_is_used(chat_server, expl, model, message):
    backend = EndpointChat(chat_server.url, model, timeout=0.5)
    with pytest.raises(LLMError, match=message):
        backend.chat(narration_messages(expl))
    result = narrate(expl, backend)
    assert result.source == "template" and message in result.note and result.text == render(expl, "bullets")


def test_unreachable_endpoint_is_named(expl):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(LLMError, match="unreachable"):
        EndpointChat(f"http://127.0.0.1:{port}/v1", "m", timeout=2).chat([{"role": "user", "content": "hi"}])
    with pytest.raises(ValueError, match="http"):
        EndpointChat("localhost:8000", "m")


@pytest.fixture(scope="module")
def tiny_chat_dir(tmp_path_factory):
    """A randomly initialised tiny Llama with a word-level tokenizer and a chat template, built offline."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["<unk>", "<s>", "</s>", "<pad>", "colour", "blur", "strongly", "moderately", "more", "less", "scarlet",
             "blurry", "sharp", ":", ".", "user", "assistant", "system"]  # fmt: skip
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} </s> {% endfor %}"
        "{% if add_generation_prompt %}assistant : {% endif %}"
    )
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(words), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=1, eos_token_id=2, pad_token_id=3)  # fmt: skip
    path = tmp_path_factory.mktemp("chat")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_local_chat_model_generates_and_random_text_falls_back(tiny_chat_dir, expl, tmp_path):
    backend = LocalChat(tiny_chat_dir, max_new_tokens=12, cache_dir=tmp_path)
    reply = backend.chat(narration_messages(expl))
    assert isinstance(reply, str) and reply.strip()
    assert backend.chat(narration_messages(expl)) == reply  # greedy and cached
    assert len(list((tmp_path / "llm").glob("*.json"))) == 1
    result = narrate(expl, backend, retries=1)
    assert result.source == "template" and result.attempts == 2 and "faithfulness" in result.note


def test_folders_that_are_not_chat_models_are_named(tiny_chat_dir, tmp_path):
    with pytest.raises(LLMError, match="config.json"):
        LocalChat(tmp_path)
    import shutil

    plain = tmp_path / "plain"
    shutil.copytree(tiny_chat_dir, plain)
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(LLMError, match="chat template"):
        LocalChat(plain)


def test_vlm_proposals_are_pooled_and_deduplicated(chat_server, tmp_path):
    from finexl.explanation.proposals import parse_proposals, propose_concepts

    assert parse_proposals("1. Red tint\n- striped background\n* More saturated colours.\nnone\n") == [
        "red tint", "striped background", "more saturated colours",
    ]  # fmt: skip
    images = np.random.default_rng(0).integers(0, 255, (6, 8, 8, 3), dtype=np.uint8)
    got = propose_concepts(EndpointChat(chat_server.url, "vlm", cache_dir=tmp_path), images, images[::-1],
                           ["a shape"] * 6, n_pairs=3)  # fmt: skip
    assert got == [("more saturated colours", 3), ("red tint", 3), ("striped background", 3)]
    content = chat_server.requests[0]["messages"][0]["content"]
    assert [p["type"] for p in content] == ["text", "image_url", "image_url"]
    assert content[1]["image_url"]["url"].startswith("data:image/png;base64,")
    with pytest.raises(LLMError, match="none of 3 pairs"):
        propose_concepts(EndpointChat(chat_server.url, "error"), images, images, ["a"] * 6, n_pairs=3)


def test_transient_failures_are_retried_and_a_deadline_bounds_every_answer(chat_server, expl):
    import time

    messages = narration_messages(expl)
    assert EndpointChat(chat_server.url, "flaky", timeout=10).chat(messages).startswith("colour:")
    assert chat_server.calls["flaky"] == 2  # HTTP 503 once, then the answer
    with pytest.raises(LLMError, match=r"broke off|unreachable"):
        EndpointChat(chat_server.url, "drop", timeout=10, retries=1).chat(messages)
    assert chat_server.calls["drop"] == 2
    with pytest.raises(LLMError, match=r"broke off|unreachable"):
        EndpointChat(chat_server.url, "truncate", timeout=10, retries=0).chat(messages)
    start = time.monotonic()
    with pytest.raises(LLMError, match="timed out after 1 s"):
        EndpointChat(chat_server.url, "trickle", timeout=1.0).chat(messages)  # each byte within the read timeout
    assert time.monotonic() - start < 3.0  # the deadline is for the whole answer, not per read
    result = narrate(expl, EndpointChat(chat_server.url, "drop", timeout=5, retries=0))
    assert result.source == "template" and "LLM failed" in result.note


def test_secrets_are_sent_but_never_shown_or_kept(chat_server, expl, monkeypatch):
    from finexl.chat import make_chat, redact_url
    from finexl.errors import ConfigError

    host = chat_server.url.replace("http://", "")
    with_credentials = EndpointChat(f"http://alice:s3cret@{host}", "good")
    with_credentials.chat(narration_messages(expl))
    assert chat_server.headers[-1]["Authorization"].startswith("Basic ")
    assert "s3cret" not in with_credentials.identity and "alice" not in with_credentials.url
    assert redact_url(f"http://alice:s3cret@{host}") == f"http://***@{host}"
    monkeypatch.setenv("FINEXL_TEST_KEY", "sk-xyz")
    backend = make_chat(endpoint=chat_server.url, model="error", api_key_env="FINEXL_TEST_KEY")
    with pytest.raises(LLMError) as info:
        backend.chat(narration_messages(expl))
    assert chat_server.headers[-1]["Authorization"] == "Bearer sk-xyz"
    assert "sk-xyz" not in str(info.value) and "sk-xyz" not in backend.identity
    with pytest.raises(ConfigError, match="FINEXL_NO_SUCH_KEY"):
        make_chat(endpoint=chat_server.url, model="good", api_key_env="FINEXL_NO_SUCH_KEY")
