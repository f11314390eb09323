"""The teacher: one chat-completions call = cache lookup, budget check, bounded concurrency, retries.

Retries are ours, not the `openai` client's (`max_retries=0`): we also retry answers the client accepts but
we cannot use (a body that is not JSON, no choices, no content that finished), we count every retry for the manifest,
and we honour `Retry-After` exactly as the server sends it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import openai

from mixer.errors import MixerError
from mixer.evolve.cache import OPENAI_API_HOST, TOO_LONG, CallCache, Completion, call_key, served_by
from mixer.evolve.cost import Budget, Prices
from mixer.recipe import Endpoint
from mixer.redact import redact_url, redact_urls_in

MAX_BACKOFF_SECONDS = 60.0
RATE_LIMIT_PATIENCE_SECONDS = 600.0  # how long rate limits are waited out with no call of the block answered
MAX_RATE_LIMITED_TRIES = 100  # one call's tries, however the others fare
RETRYABLE_STATUS = frozenset({408, 409, 429})


class UnusableAnswer(Exception):
    """A 200 response we cannot use; retried like a 5xx."""


def unset_key(endpoint: Endpoint) -> str | None:
    """The variable the endpoint's key must be in, when it is needed and not set. vLLM and llama.cpp servers
    accept any key; OpenAI's API does not, also when named as base_url (the bundled recipes' default for
    ${OPENAI_BASE_URL}), which had counted as a local server and answered the first call with a 401."""
    if os.environ.get(endpoint.api_key_env):
        return None
    if endpoint.base_url and served_by(endpoint.base_url) != OPENAI_API_HOST:
        return None
    return endpoint.api_key_env


def api_key(endpoint: Endpoint) -> str:
    if unset_key(endpoint) is not None:
        raise MixerError(
            f"no API key: ${endpoint.api_key_env} is not set for model {endpoint.model!r}",
            f"export {endpoint.api_key_env}=... (keys are read from the environment only, never from the recipe)",
        )
    return os.environ.get(endpoint.api_key_env) or "EMPTY"


def retry_after_seconds(error: Exception) -> float | None:
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is not None:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                return None
    return None


def backoff_seconds(attempt: int, base: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform in [0, base·2^attempt], capped."""
    return rng.uniform(0, min(MAX_BACKOFF_SECONDS, base * 2**attempt))


def _answer_text(message: Any, finish_reason: str | None) -> str | None:
    """A message's text; None when it has none to give, which is retried. A message without content that
    finished is an answer of no text, not a fault: a reasoning model behind a reasoning parser that spent
    max_tokens thinking, or a content filter; asking again would cost the same, and stop the block when the
    retries ran out. OpenAI's refusals come as `refusal`, and are read as the text they are."""
    if isinstance(message.content, str):
        return message.content
    if isinstance(getattr(message, "refusal", None), str):
        return message.refusal
    return "" if finish_reason in ("length", "stop", "content_filter") else None


def _out_of_quota(error: Exception) -> bool:
    """OpenAI's 429 for an account with no credit left: waiting does not end it, unlike a rate limit."""
    return (
        isinstance(error, openai.APIStatusError)
        and error.status_code == 429
        and "insufficient_quota" in (getattr(error, "code", None), getattr(error, "type", None))
    )


def _retryable(error: Exception) -> bool:
    if isinstance(error, openai.APIStatusError):
        return not _out_of_quota(error) and (error.status_code in RETRYABLE_STATUS or error.status_code >= 500)
    return isinstance(
        error, openai.APIConnectionError | openai.APIResponseValidationError | UnusableAnswer | ValueError
    )


# how servers word a prompt longer than the model's context: OpenAI and vLLM ("maximum context length",
# context_length_exceeded), llama.cpp ("exceeds the available context size", exceed_context_size_error)
CONTEXT_PHRASES = ("context length", "context_length", "context size", "context_size", "context window")
# OpenAI's 429 for one request larger than the account's tokens-per-minute limit ("Request too large for gpt-4o
# ... on tokens per min (TPM): Limit 30000, Requested 30601. The input or output tokens must be reduced ..."):
# no wait makes it pass
TOO_LARGE_PHRASES = ("request too large", "must be reduced")


def _too_long_for_teacher(error: Exception) -> bool:
    """The server refused this request for its size (over the model's context, or over the account's tokens per
    minute): the row's failure, never the teacher's."""
    if not isinstance(error, openai.APIStatusError):
        return False
    said = str(error).lower()
    if error.status_code == 429:
        return any(phrase in said for phrase in TOO_LARGE_PHRASES)
    return error.status_code in (400, 413) and any(phrase in said for phrase in CONTEXT_PHRASES)


def _rate_limited(error: Exception) -> bool:
    return isinstance(error, openai.APIStatusError) and error.status_code == 429 and not _out_of_quota(error)


def _refusal_hint(error: Exception, endpoint: Endpoint) -> str:
    """What to change for a request the server refused. OpenAI's reasoning models refuse `max_tokens` (and a
    temperature other than 1), which the recipe can say otherwise; the rest is the model, URL or key."""
    said = str(error)
    if _out_of_quota(error):
        return f"the account of the key in ${endpoint.api_key_env} has no quota left: add credit, or use another key"
    if "max_completion_tokens" in said and endpoint.max_tokens_param != "max_completion_tokens":
        return "this model takes max_completion_tokens: set `max_tokens_param: max_completion_tokens` on the teacher"
    if "temperature" in said and "support" in said:  # "'temperature' does not support 0 with this model"
        return "this model takes its default temperature only: set `temperature: 1` (the judge's default is 0)"
    status = error.status_code if isinstance(error, openai.APIStatusError) else None
    base = (endpoint.base_url or "").rstrip("/")
    if status == 404 and base and not base.endswith("/v1"):
        return f"vLLM, llama.cpp and Ollama serve the API under /v1: base_url: {redact_url(base)}/v1"
    if status == 401:
        key = endpoint.api_key_env
        return f"the server refused the key in ${key}: check it (vLLM takes the one given to --api-key)"
    return "check the model name, base_url and the key in $" + endpoint.api_key_env


def _gave_up_hint(error: Exception, endpoint: Endpoint) -> str:
    resume = "completed calls are cached: run again to resume"
    if _rate_limited(error):
        return (
            "the teacher kept answering with rate limits (HTTP 429): lower the block's `concurrency`, or wait for "
            f"the account's limit to reset; {resume}"
        )
    if isinstance(error, openai.APITimeoutError):  # a local server queues what its slots cannot take
        return (
            f"no answer within teacher.timeout ({endpoint.timeout:g} s): a server running fewer requests at once "
            "than the block's `concurrency` (llama.cpp's --parallel, vLLM's --max-num-seqs) queues the rest; "
            f"lower `concurrency` or raise `timeout`; {resume}"
        )
    return f"is the server up? {resume}"


def _describe(error: Exception) -> str:
    if isinstance(error, openai.APIStatusError):
        # said from the body (the server's JSON `error` object, or its text): the client's `message` repeats the
        # status ("Error code: 400 - ...") and older clients (openai 1.55) put the whole body's Python repr there
        body = error.body
        if isinstance(body, dict):  # {"message": ...}; another shape (FastAPI's {"detail": ...}) as JSON
            message = body.get("message")
            said = message if isinstance(message, str) and message else json.dumps(body, ensure_ascii=False)
        elif isinstance(body, str) and body.strip():
            said = body.strip()
        else:
            said = error.message.removeprefix(f"Error code: {error.status_code}").removeprefix(" - ")
        return f"HTTP {error.status_code}: {said or 'no message'}"
    if isinstance(error, openai.APITimeoutError):
        return "timed out"
    if isinstance(error, openai.APIConnectionError):
        return f"connection failed ({error.__cause__ or error})"
    return f"{type(error).__name__}: {error}"


@dataclass
class Teacher:
    """One endpoint, sharing the block's cache, budget, concurrency bound and counters with its sibling (judge)."""

    endpoint: Endpoint
    cache: CallCache
    budget: Budget
    prices: Prices
    semaphore: asyncio.Semaphore
    block: str
    rng: random.Random = field(default_factory=random.Random)
    on_retry: Callable[[str], None] | None = None  # told each failure it is about to retry
    _client: openai.AsyncOpenAI | None = None

    @property
    def client(self) -> openai.AsyncOpenAI:
        if self._client is None:
            self._client = openai.AsyncOpenAI(
                api_key=api_key(self.endpoint),
                base_url=self.endpoint.base_url,
                timeout=self.endpoint.timeout,
                max_retries=0,
            )
        return self._client

    async def complete(self, prompt: str) -> Completion:
        messages = [{"role": "user", "content": prompt}]
        sampling = self.endpoint.sampling()
        key = call_key(served_by(self.endpoint.base_url), self.endpoint.model, messages, sampling)
        cached = self.cache.get(key)
        if cached is not None:
            self._account(cached, cached=True)
            return cached
        async with self.semaphore:
            self.budget.check(self.block)
            completion = await self._call_with_retries(messages, self.endpoint.request())
        if completion.finish_reason != TOO_LONG:  # asked again next run: the server's context may have grown
            self.cache.put(key, self.endpoint.model, completion)
        self._account(completion, cached=False)
        return completion

    def _account(self, completion: Completion, *, cached: bool) -> None:
        spent = self.budget.spent
        if cached:
            spent.cached += 1
        else:
            spent.calls += 1
        spent.prompt_tokens += completion.prompt_tokens
        spent.completion_tokens += completion.completion_tokens
        spent.usd += self.prices.usd(completion.prompt_tokens, completion.completion_tokens)

    async def _call_with_retries(self, messages: list[dict[str, str]], request: dict) -> Completion:
        """Failures count against `max_retries`, but a rate limit does not while the teacher is answering:
        under a tokens-per-minute limit with 32 rows in flight, one row can meet seven 429s in a row and would
        stop a block that is making progress. A rate limit counts once no call of the block has been answered
        for RATE_LIMIT_PATIENCE_SECONDS (an account blocked for the day), and after MAX_RATE_LIMITED_TRIES."""
        attempts = self.endpoint.max_retries + 1
        failures = 0
        for tries in itertools.count(1):
            if self.budget.halted is not None:  # another row hit the budget or a dead teacher meanwhile
                raise self.budget.halted
            try:
                completion = await self._call(messages, request)
                self.budget.answered_at = time.monotonic()
                return completion
            except MixerError:  # no key (the client is made at the first call): said as it is, not as a refusal
                raise
            except Exception as error:
                where = redact_url(self.endpoint.base_url or OPENAI_API_HOST)  # no credentials in messages
                if _too_long_for_teacher(error):  # this row's prompt, not the teacher: the row is eliminated
                    return Completion("", 0, 0, TOO_LONG, redact_urls_in(_describe(error)))
                if not _retryable(error):
                    self.budget.halted = MixerError(
                        f"evolve.{self.block}: teacher {self.endpoint.model!r} at {where} refused the request: "
                        + redact_urls_in(_describe(error)),
                        _refusal_hint(error, self.endpoint),
                    )
                    raise self.budget.halted from None
                waited_out = (
                    _rate_limited(error)
                    and time.monotonic() - self.budget.answered_at < RATE_LIMIT_PATIENCE_SECONDS
                    and tries < MAX_RATE_LIMITED_TRIES
                )
                failures += 0 if waited_out else 1
                if failures == attempts:
                    self.budget.halted = MixerError(
                        f"evolve.{self.block}: teacher {self.endpoint.model!r} at {where} gave up after {tries}"
                        f" attempt(s); last: {redact_urls_in(_describe(error))}",
                        _gave_up_hint(error, self.endpoint),
                    )
                    raise self.budget.halted from None
                self.budget.spent.retries += 1
                if self.on_retry is not None:
                    self.on_retry(redact_urls_in(_describe(error)))
                delay = retry_after_seconds(error)
                if delay is None:
                    delay = backoff_seconds(min(tries - 1, 16), self.endpoint.retry_base_seconds, self.rng)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _call(self, messages: list[dict[str, str]], request: dict) -> Completion:
        response = await self.client.chat.completions.create(model=self.endpoint.model, messages=messages, **request)
        choices = getattr(response, "choices", None)
        if not choices or choices[0].message is None:
            raise UnusableAnswer("response has no message")
        text = _answer_text(choices[0].message, choices[0].finish_reason)
        if text is None:
            raise UnusableAnswer("response has no message content")
        usage = response.usage
        prompt_tokens, completion_tokens = (
            getattr(usage, count, None) for count in ("prompt_tokens", "completion_tokens")
        )
        if (prompt_tokens is None or completion_tokens is None) and self._budget_counts_tokens():
            self._halt_uncounted()  # after this answer, which is kept: it was paid for
        return Completion(
            text=text,
            prompt_tokens=prompt_tokens or 0,
            completion_tokens=completion_tokens or 0,
            finish_reason=choices[0].finish_reason,
        )

    def _budget_counts_tokens(self) -> bool:
        """Whether the block's budget is kept by counting tokens: a token budget, or a dollar budget on a price
        that is not zero (a free local server's dollars are 0 whatever the counts)."""
        priced = self.budget.usd is not None and self.prices.usd(1000, 1000) > 0
        return self.budget.tokens is not None or priced

    def _halt_uncounted(self) -> None:
        """A teacher that leaves token counts out of its answers (`usage`) would be counted 0 tokens and $0 a call,
        so the budget would never stop the block: it stops at its next call instead, with this answer cached."""
        if self.budget.halted is None:
            where = redact_url(self.endpoint.base_url or OPENAI_API_HOST)
            self.budget.halted = MixerError(
                f"evolve.{self.block}: teacher {self.endpoint.model!r} at {where} answers without token counts (no "
                "`usage` in its replies), so the block's budget cannot be kept",
                f"the answers so far are cached: drop `budget` from evolve.{self.block} to run without one, or serve "
                "the model with a server that reports usage (vLLM and llama.cpp's server do, as OpenAI's API does)",
            )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
