"""A real OpenAI-compatible chat-completions server on 127.0.0.1 for tests and benchmarks.

Answers are a pure function of the request, so two runs can be compared byte for byte. Words in an instruction
steer the answer (TRIGGER_REFUSE, TRIGGER_COPY, TRIGGER_PUNCT, TRIGGER_EQUAL, TRIGGER_BADCODE, TRIGGER_GOODCODE,
TRIGGER_MUMBLE, TRIGGER_LONG, TRIGGER_SPACED; TRIGGER_THINK puts a reasoning model's <think> block before any answer); an answer longer than the request's `max_tokens` (one token a word here) is cut
there with finish_reason "length", as real servers do; `inject()` queues faults for the next requests: ("429", retry_after), ("500",),
("slow", seconds), ("garbage",), ("nochoices",), ("quota",), ("toolarge",), ("usage", value) (an answer whose `usage` is value:
None, {} or nulls, as a server that does not count tokens sends), ("nocontent", finish_reason) (a message of null content, as a
reasoning parser sends when max_tokens ran out while thinking). With `reasoning_api`, it refuses `max_tokens`
and a temperature other than 1 with HTTP 400, as OpenAI's reasoning models do; with `context_limit`, a request
longer than that (in words, with its max_tokens) gets vLLM's context-length 400. Every request is logged with its content key and outcome.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GIVEN = "#Given Instruction#\n"


@dataclass
class Logged:
    at: float
    key: str
    kind: str  # evolve | judge | answer | unknown
    outcome: str  # ok | 400 | 429 | 500 | slow | garbage | nochoices | nocontent | held


def request_key(body: dict) -> str:
    shown = {k: body.get(k) for k in ("model", "messages", "temperature", "max_tokens", "top_p")}
    return hashlib.sha256(json.dumps(shown, sort_keys=True).encode()).hexdigest()


def given_instruction(prompt: str) -> str:
    return prompt.split(GIVEN, 1)[1].split("\n\n#", 1)[0].strip()


def evolve_answer(instruction: str) -> str:
    if "TRIGGER_COPY" in instruction:
        return f"#Rewritten Instruction#: {instruction} with one more constraint"
    if "TRIGGER_PUNCT" in instruction:
        return "?! ... the of, and -- it."
    step = int(hashlib.sha256(instruction.encode()).hexdigest(), 16) % 7 + 2
    return f"{instruction} Justify each choice in {step} numbered steps."


def judge_answer(prompt: str) -> str:
    if "TRIGGER_MUMBLE" in prompt:
        return "They look rather similar to me."
    return "Equal" if "TRIGGER_EQUAL" in prompt else "Not Equal"


def plain_answer(prompt: str) -> str:
    if "TRIGGER_REFUSE" in prompt:
        return "I'm sorry, but I cannot help with that request."
    if "TRIGGER_BADCODE" in prompt:
        return "Here is the function:\n```python\ndef solve(:\n    return 1\n```\n"
    if "TRIGGER_GOODCODE" in prompt:
        return (
            "In Python:\n```python\ndef solve(x):\n    return x + 1\n```\nAnd in Rust:\n```rust\nfn solve() {}\n```\n"
        )
    digest = hashlib.sha256(prompt.encode()).hexdigest()[:8]
    if "TRIGGER_SPACED" in prompt:  # as some servers (Ollama, LM Studio) send an answer
        return f"\n\n  A spaced answer ({digest}).  \n"
    if "TRIGGER_LONG" in prompt:
        return f"A long answer ({digest}): " + " ".join(f"point {n}." for n in range(1, 201))
    return f"A careful answer ({digest}) to: {prompt[:60]} ... covering each point in turn, with an example."


def classify(prompt: str) -> tuple[str, str]:
    if GIVEN in prompt:
        return "evolve", evolve_answer(given_instruction(prompt))
    if prompt.startswith("Here are two instructions"):
        return "judge", judge_answer(prompt)
    return "answer", plain_answer(prompt)


def _reasoning_api_refusal(body: dict) -> dict | None:
    """OpenAI's error for a request its reasoning models refuse (the wording of its API)."""
    if "max_tokens" in body:
        return {
            "message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
            "type": "invalid_request_error",
            "param": "max_tokens",
            "code": "unsupported_parameter",
        }
    if body.get("temperature", 1) != 1:
        return {
            "message": f"Unsupported value: 'temperature' does not support {body['temperature']} with this model. "
            "Only the default (1) value is supported.",
            "type": "invalid_request_error",
            "param": "temperature",
            "code": "unsupported_value",
        }
    return None


def _context_refusal(body: dict, limit: int | None) -> dict | None:
    """vLLM's error for a prompt and completion longer than the model's context (one token a word here)."""
    words = sum(len(m["content"].split()) for m in body["messages"])
    completion = body.get("max_tokens", body.get("max_completion_tokens")) or 0
    if limit is None or words + completion <= limit:
        return None
    return {
        "message": f"This model's maximum context length is {limit} tokens. However, you requested "
        f"{words + completion} tokens ({words} in the messages, {completion} in the completion). Please reduce the "
        "length of the messages or completion.",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default backlog of 5 resets connections at concurrency 64


class FakeTeacher:
    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        self.faults: deque[tuple] = deque()
        self.log: list[Logged] = []
        self.hold_after: int | None = None  # after this many successful answers, hang every request
        self.authorizations: set[str] = set()  # Authorization headers seen (to prove a key was sent)
        self.reasoning_api = False  # refuse max_tokens and a temperature other than 1, as OpenAI's o-series do
        self.context_limit: int | None = None  # words of prompt + max_tokens past which a request is refused
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> FakeTeacher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()

    def inject(self, *faults: tuple) -> None:
        with self._lock:
            self.faults.extend(faults)

    def ok_keys(self) -> Counter:
        with self._lock:
            return Counter(entry.key for entry in self.log if entry.outcome == "ok")

    def count(self, outcome: str = "ok", kind: str | None = None) -> int:
        with self._lock:
            return sum(1 for e in self.log if e.outcome == outcome and (kind is None or e.kind == kind))

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        teacher = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall

            def log_message(self, *args) -> None:  # quiet
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                if self.path != "/v1/chat/completions":  # routed by path, as vLLM's FastAPI app answers
                    self._send(404, b'{"detail": "Not Found"}')
                    return
                key = request_key(body)
                prompt = body["messages"][-1]["content"]
                kind, text = classify(prompt)
                thinking = (body.get("chat_template_kwargs") or {}).get("enable_thinking", True)  # as vLLM takes it
                if "TRIGGER_THINK" in prompt and thinking:  # a reasoning model served without a reasoning parser
                    text = "<think>\nThe user asks for something; let me weigh it step by step.\n</think>\n\n" + text
                refusal = _reasoning_api_refusal(body) if teacher.reasoning_api else None
                refusal = refusal or _context_refusal(body, teacher.context_limit)
                with teacher._lock:
                    teacher.authorizations.add(self.headers.get("Authorization", ""))
                    fault = teacher.faults.popleft() if teacher.faults else None
                    held = teacher.hold_after is not None and (
                        sum(1 for e in teacher.log if e.outcome == "ok") >= teacher.hold_after
                    )
                    answered = not fault or fault[0] == "usage"  # an answer, whatever its usage says
                    outcome = "held" if held else "400" if refusal else "ok" if answered else fault[0]
                    teacher.log.append(Logged(time.monotonic(), key, kind, outcome))
                if refusal:
                    self._send(400, json.dumps({"error": refusal}).encode())
                    return
                if held:
                    teacher._release.wait()
                    self._send(503, b'{"error": {"message": "shutting down"}}')
                    return
                if teacher.latency:
                    time.sleep(teacher.latency)
                if fault and fault[0] == "429":
                    error = {"error": {"message": "Rate limit reached", "type": "rate_limit_error"}}
                    self._send(429, json.dumps(error).encode(), {"Retry-After": str(fault[1])})
                    return
                if fault and fault[0] == "quota":  # OpenAI's words for an account with no credit left
                    error = {
                        "error": {
                            "message": "You exceeded your current quota, please check your plan and billing details.",
                            "type": "insufficient_quota",
                            "code": "insufficient_quota",
                        }
                    }
                    self._send(429, json.dumps(error).encode())
                    return
                if fault and fault[0] == "toolarge":  # one request above the account's tokens per minute
                    message = (
                        "Request too large for gpt-4o in organization org-test on tokens per min (TPM): Limit 30000,"
                        " Requested 30601. The input or output tokens must be reduced in order to run successfully."
                    )
                    error = {"error": {"message": message, "type": "tokens", "code": "rate_limit_exceeded"}}
                    self._send(429, json.dumps(error).encode())
                    return
                if fault and fault[0] == "401":  # vLLM started with --api-key, given another key
                    self._send(401, b'{"error": "Unauthorized"}')
                    return
                if fault and fault[0] == "500":
                    self._send(500, b'{"error": {"message": "internal error", "type": "server_error"}}')
                    return
                if fault and fault[0] == "garbage":
                    self._send(200, b"<html>upstream proxy error</html>{")
                    return
                if fault and fault[0] == "slow":
                    time.sleep(fault[1])
                words = sum(len(m["content"].split()) for m in body["messages"])
                nocontent = bool(fault and fault[0] == "nocontent")
                limit = body.get("max_tokens", body.get("max_completion_tokens"))
                finish = "length" if limit is not None and len(text.split()) > limit else "stop"
                if finish == "length":
                    text = " ".join(text.split()[:limit])
                choices = (
                    []
                    if fault and fault[0] == "nochoices"
                    else [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": None if nocontent else text},
                            "finish_reason": fault[1] if nocontent else finish,
                        }
                    ]
                )
                response = {
                    "id": "chatcmpl-" + key[:12],
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": choices,
                    "usage": {
                        "prompt_tokens": words,
                        "completion_tokens": len(text.split()),
                        "total_tokens": words + len(text.split()),
                    },
                }
                if fault and fault[0] == "usage":  # a server that leaves token counts out, or sends nulls
                    response["usage"] = fault[1]
                self._send(200, json.dumps(response).encode())

        return Handler


def main() -> None:
    """Run standalone (for `mixer evolve` by hand): python tests/openai_server.py [latency]."""
    import sys

    server = FakeTeacher(float(sys.argv[1]) if len(sys.argv) > 1 else 0.0).start()
    print(server.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
