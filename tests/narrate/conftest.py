import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


def aspect(name, group, score, lo, hi, direction="increase", concept="x", toward=None, changed=True, threshold=0.1):
    return {"aspect": name, "group": group, "score": score, "interval": [lo, hi], "direction": direction,
            "concept": concept, "toward": toward or concept, "changed": changed, "threshold": threshold}  # fmt: skip


@pytest.fixture
def expl():
    """An explanation with a strong increase, a moderate decrease and unchanged aspects."""
    return {
        "aspects": [
            aspect("colour", "colour", 0.47, 0.43, 0.55, concept="scarlet"),
            aspect("blur", "style", 0.31, 0.25, 0.36, "decrease", "blurry", "sharp"),
            aspect("pose", "pose", 0.04, 0.0, 0.08, concept="upright", changed=False),
            aspect("size", "composition", 0.02, 0.0, 0.05, concept="large", changed=False),
        ],
        "residual": {"value": 0.4, "interval": [0.3, 0.5]},
        "divergence": {"n_pairs": 128},
        "method": "finexl",
    }


FAITHFUL = (
    "colour: the outputs turn strongly more scarlet (0.47, interval 0.43-0.55).\n"
    "blur: the images are moderately less blurry, toward sharp (0.31)."
)


class ChatServer:
    """A local OpenAI-compatible chat-completions server whose behaviour depends on the requested model name."""

    def __init__(self):
        self.requests = []
        self.headers = []
        self.calls: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                server.headers.append(dict(self.headers))
                model = body["model"]
                server.calls[model] = server.calls.get(model, 0) + 1
                if model == "flaky" and server.calls[model] == 1:  # fails once, then answers
                    return self._send(503, b'{"error": "overloaded"}')
                if model == "drop":  # closes the connection without a word
                    self.close_connection = True
                    return
                if model in ("truncate", "trickle"):
                    payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": FAITHFUL}}]})
                    data = payload.encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if model == "truncate":  # half the body, then the connection closes
                        self.wfile.write(data[: len(data) // 2])
                        self.close_connection = True
                        return
                    for i in range(len(data)):  # one byte every 50 ms: about 8 s for the whole reply
                        try:
                            self.wfile.write(data[i : i + 1])
                            self.wfile.flush()
                        except OSError:
                            return
                        time.sleep(0.05)
                    return
                n_user = sum(m["role"] == "user" for m in body["messages"])
                if model == "error":
                    return self._send(500, b'{"error": "internal"}')
                if model == "slow":
                    time.sleep(1.5)
                if model == "malformed":
                    return self._send(200, b"<html>not json</html>")
                reply = {
                    "good": FAITHFUL,
                    "flaky": FAITHFUL,
                    "slow": FAITHFUL,
                    "wrong": "colour: strongly less scarlet.\nblur: moderately less blurry.",
                    "fix-on-retry": FAITHFUL
                    if n_user > 1
                    else "colour: slightly more scarlet.\nblur: moderately less blurry.",
                    "refuse": "I'm sorry, but I can't help with that.",
                    "vlm": "1. Red tint\n- striped background\n* more saturated colours",
                }[model]
                payload = {"choices": [{"message": {"role": "assistant", "content": reply}}]}
                self._send(200, json.dumps(payload).encode())

            def _send(self, code, data):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def chat_server():
    server = ChatServer()
    yield server
    server.close()
