"""Chat models for narration and concept proposals: a local transformers model or an OpenAI-compatible endpoint.

Both take chat messages (``[{"role": "system"|"user", "content": str | list}]``, content parts as in the OpenAI API:
``{"type": "text", "text": ...}`` and ``{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}``)
and return the reply text. Answers are cached on disk by request (backend identity, messages, generation settings):
asking the same thing twice never calls the model twice.

Every failure is an :class:`LLMError` with a message that names the backend and what went wrong (unreachable,
timed out, HTTP error, malformed reply, refusal, not a chat model).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import numpy as np
import requests
import urllib3
from PIL import Image

from finexl.errors import BackendError, ConfigError
from finexl.loading import fingerprint_folder
from finexl.utils import atomic_write_json

logger = logging.getLogger(__name__)

REFUSAL_MARKERS = (
    "i can't help",
    "i cannot help",
    "i can't assist",
    "i cannot assist",
    "i'm sorry, but i can",
    "i am unable to",
    "i won't be able",
)


class LLMError(BackendError):
    """A chat model that could not answer usefully."""


def image_part(image: np.ndarray) -> dict:
    """An OpenAI-style image content part (PNG data URL) for a uint8 (h, w, 3) image."""

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()},
    }


def _is_refusal(text: str) -> bool:
    low = text.strip().lower()
    return any(low.startswith(m) or m in low[:80] for m in REFUSAL_MARKERS)


class ChatBackend:
    identity: str = ""

    def __init__(self, cache_dir: str | Path | None = None, max_new_tokens: int = 400, temperature: float = 0.0):
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature

    def chat(self, messages: list[dict]) -> str:
        """The reply to ``messages``; from the on-disk cache when this exact request was answered before."""
        key = hashlib.sha256(
            json.dumps([self.identity, messages, self.max_new_tokens, self.temperature], sort_keys=True).encode()
        ).hexdigest()
        path = self.cache_dir / "llm" / f"{key[:32]}.json" if self.cache_dir else None
        if path is not None and path.is_file():
            try:
                reply = json.loads(path.read_text(encoding="utf-8"))["reply"]
                if isinstance(reply, str):
                    return reply
                logger.warning("asking again: the cached reply %s is not text", path)
            except (OSError, ValueError, KeyError, TypeError) as err:
                logger.warning("asking again: unreadable cached reply %s: %s", path, err)
        reply = self._generate(messages)
        if not reply.strip():
            raise LLMError(f"{self.identity} returned an empty reply")
        if _is_refusal(reply):
            raise LLMError(f"{self.identity} refused: {reply.strip()[:120]!r}")
        if path is not None:
            atomic_write_json(path, {"identity": self.identity, "messages": messages, "reply": reply})
        return reply

    def _generate(self, messages: list[dict]) -> str:
        raise NotImplementedError


TRANSIENT_STATUS = (408, 429, 500, 502, 503, 504)


class _Transient(Exception):
    """A failure worth another attempt (the connection dropped, the reply broke off, HTTP 5xx or 429)."""


def redact_url(url: str) -> str:
    """``url`` with any user name and password replaced by ``***``, for messages and saved settings."""

    parts = urlsplit(url)
    if not (parts.username or parts.password):
        return url
    host = parts.hostname or ""
    return urlunsplit(parts._replace(netloc=f"***@{host}" + (f":{parts.port}" if parts.port else "")))


class EndpointChat(ChatBackend):
    """An OpenAI-compatible ``/chat/completions`` endpoint (a local vLLM or Ollama server). ``url`` is the API base,
    e.g. ``http://localhost:8000/v1``.

    ``timeout`` is a deadline for the whole answer, retries included: a server that trickles bytes or keeps failing
    is given up on in time. Transient failures (connection refused or dropped, a reply cut short, HTTP 408, 429 and
    5xx) are retried ``retries`` times with exponential backoff. ``api_key`` is sent as a bearer token; credentials
    written into the URL (``http://user:pw@host/v1``) are sent as basic authentication. Neither is ever shown in a
    message or kept in the backend's identity.
    """

    def __init__(
        self, url: str, model: str, timeout: float = 60.0, api_key: str | None = None, retries: int = 2, **kw
    ):

        super().__init__(**kw)
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"endpoint URL must start with http:// or https://, got {redact_url(url)!r}")
        if not (timeout > 0) or retries < 0:
            raise ConfigError(f"the endpoint's timeout must be > 0 and retries >= 0, got {timeout} and {retries}")
        parts = urlsplit(url)
        self._auth = (unquote(parts.username or ""), unquote(parts.password or "")) if parts.username else None
        netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
        self.url = urlunsplit(parts._replace(netloc=netloc)).rstrip("/") + "/chat/completions"  # no credentials
        self.model = model
        self.timeout = timeout
        self.retries = retries
        self._api_key = api_key
        self.identity = f"endpoint:{self.url}:{model}"

    def _generate(self, messages: list[dict]) -> str:
        body = {
            "model": self.model,
            "messages": messages,
            "max_tokens": self.max_new_tokens,
            "temperature": self.temperature,
        }
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        deadline = time.monotonic() + self.timeout
        failures = []
        for attempt in range(self.retries + 1):
            try:
                raw = self._post(body, headers, deadline)
                break
            except _Transient as err:
                failures.append(str(err))
                pause = 0.25 * 2**attempt
                if attempt == self.retries or time.monotonic() + pause >= deadline:
                    tried = f" ({len(failures)} attempts)" if len(failures) > 1 else ""
                    raise LLMError(f"{self.url} {failures[-1]}{tried}") from None
                logger.info("%s %s; trying again in %.2f s", self.url, err, pause)
                time.sleep(pause)
        try:
            reply = json.loads(raw)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raise LLMError(f"{self.url} sent a malformed reply (not a chat completion): {raw[:120]!r}") from err
        if not isinstance(reply, str):
            raise LLMError(f"{self.url} sent a reply without text content: {raw[:120]!r}")
        return reply

    def _post(self, body: dict, headers: dict, deadline: float) -> bytes:

        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Transient(f"timed out after {self.timeout:g} s")
        try:
            response = requests.post(
                self.url,
                json=body,
                headers=headers,
                auth=self._auth,
                stream=True,
                timeout=(min(remaining, 10.0), remaining),
            )
        except requests.Timeout:
            raise _Transient(f"timed out after {self.timeout:g} s") from None
        except requests.ConnectionError as err:
            raise _Transient(f"is unreachable: {_reason(err)}") from None
        with response:
            if response.status_code >= 400:
                detail = response.raw.read(200, decode_content=True).decode("utf-8", "replace")
                message = f"answered HTTP {response.status_code}: {detail}"
                if response.status_code in TRANSIENT_STATUS:
                    raise _Transient(message)
                raise LLMError(f"{self.url} {message}")
            chunks = []
            try:
                # whatever has arrived, as it arrives: a server that trickles bytes is cut off at the deadline
                raw = response.raw
                read = getattr(raw, "read1", None)
                while chunk := (read(4096, decode_content=True) if read else raw.read(1, decode_content=True)):
                    chunks.append(chunk)
                    if time.monotonic() > deadline:
                        raise _Transient(f"timed out after {self.timeout:g} s (the reply was still arriving)")
            except (requests.Timeout, urllib3.exceptions.TimeoutError):
                raise _Transient(f"timed out after {self.timeout:g} s") from None
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as err:
                raise _Transient(f"broke off its reply: {_reason(err)}") from None
        return b"".join(chunks)


def _reason(err: Exception) -> str:
    """The innermost cause of a requests error, in one short line."""
    while err.__context__ is not None and not str(err):
        err = err.__context__
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text[:200]


class _LocalModel(ChatBackend):
    """A transformers model from a local folder: the folder is checked, ``_load`` reads it, the model is moved to
    ``device`` (CPU unless asked), and the identity (for the cache) includes the weights' fingerprint."""

    kind = "local"

    def __init__(self, path: str | Path, device: str = "cpu", **kw):
        super().__init__(**kw)
        import torch

        path = Path(path)
        if not (path / "config.json").is_file():
            raise LLMError(f"no transformers model at {path}: config.json is missing")
        self._load(path)
        self.device = torch.device(device)
        self.model.to(self.device)
        self.identity = f"{self.kind}:{path.name}:{fingerprint_folder(path)}"

    def _load(self, path: Path) -> None:
        raise NotImplementedError


class LocalChat(_LocalModel):
    """A transformers chat model (causal LM with a chat template) from a local folder; text only."""

    def _load(self, path: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForCausalLM.from_pretrained(path).eval()
        except (OSError, ValueError, KeyError) as err:
            raise LLMError(f"{path} is not a transformers chat model: {err}") from err
        if not getattr(self.tokenizer, "chat_template", None):
            raise LLMError(f"{path} is not a chat model: its tokenizer has no chat template")

    def _generate(self, messages: list[dict]) -> str:
        import torch

        text_messages = []
        for m in messages:
            content = m["content"]
            if isinstance(content, list):
                if any(p.get("type") != "text" for p in content):
                    raise LLMError(f"{self.identity} is a text-only model; it cannot read images")
                content = "\n".join(p["text"] for p in content)
            text_messages.append({"role": m["role"], "content": content})
        ids = self.tokenizer.apply_chat_template(text_messages, add_generation_prompt=True, return_tensors="pt")
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        ids = ids.to(self.device)
        with torch.no_grad():
            out = self.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=self.max_new_tokens,
                do_sample=self.temperature > 0,
                temperature=self.temperature or None,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            )
        return self.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


class LocalVisionChat(_LocalModel):
    """A transformers vision-language model (``AutoModelForImageTextToText`` with a processor) from a local folder."""

    kind = "local-vlm"

    def _load(self, path: Path) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        try:
            self.processor = AutoProcessor.from_pretrained(path)
            self.model = AutoModelForImageTextToText.from_pretrained(path).eval()
        except (OSError, ValueError, KeyError) as err:
            raise LLMError(f"{path} is not a transformers vision-language model: {err}") from err

    def _generate(self, messages: list[dict]) -> str:
        import torch

        images, converted = [], []
        for m in messages:
            parts = m["content"] if isinstance(m["content"], list) else [{"type": "text", "text": m["content"]}]
            new = []
            for p in parts:
                if p.get("type") == "image_url":
                    data = base64.b64decode(p["image_url"]["url"].split(",", 1)[1])
                    images.append(Image.open(io.BytesIO(data)).convert("RGB"))
                    new.append({"type": "image"})
                else:
                    new.append({"type": "text", "text": p["text"]})
            converted.append({"role": m["role"], "content": new})
        prompt = self.processor.apply_chat_template(converted, add_generation_prompt=True)
        inputs = self.processor(text=prompt, images=images or None, return_tensors="pt").to(self.device)
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        return self.processor.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def make_chat(
    local: str | None = None,
    endpoint: str | None = None,
    model: str | None = None,
    cache_dir: str | Path | None = None,
    vision: bool = False,
    timeout: float = 60.0,
    device: str = "cpu",
    api_key_env: str | None = None,
) -> ChatBackend | None:
    """The chat backend a run names: a local transformers folder, an OpenAI-compatible endpoint, or ``None``.

    ``api_key_env``: the name of an environment variable holding the endpoint's API key (read here, never stored).
    """

    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise ConfigError(f"environment variable {api_key_env} (named by --llm-api-key-env) is not set or empty")
    if local and endpoint:
        raise ConfigError("give either a local model folder or an endpoint, not both")
    if endpoint:
        if not model:
            raise ConfigError("an endpoint needs a model name (--llm-model / --vlm-model)")
        return EndpointChat(endpoint, model, timeout=timeout, api_key=api_key, cache_dir=cache_dir)
    if local:
        return (LocalVisionChat if vision else LocalChat)(local, device=device, cache_dir=cache_dir)
    return None
