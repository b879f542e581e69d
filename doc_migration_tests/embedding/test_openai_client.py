"""The real ``openai`` SDK client, through OpenAIEmbedder, against the local OpenAI-compatible
server: order, limits, retries, terminal errors, rate limits and format fallbacks."""

from __future__ import annotations

import math
import socket
import time
import traceback
from collections.abc import Iterator

import numpy as np
import pytest

from doc_migration.embedding.base import Embedder, EmbeddingError
from doc_migration.embedding.openai_client import OpenAIEmbedder, OpenAIEmbeddingError, clear_shared_state
from doc_migration.embedding.pricing import DEFAULT_PRICES, estimate_cost
from doc_migration.tokens import count_tokens
from testkit.embedding_server import EmbeddingTestServer

KEY = "sk-test-local-key"


@pytest.fixture(autouse=True)
def _fresh_shared_state() -> Iterator[None]:
    """Each test gets its own pool/limiter even if the OS reuses a port for a new server."""
    clear_shared_state()
    yield
    clear_shared_state()


def make_texts(n: int, seed: int = 0) -> list[str]:
    """Distinct texts of very different lengths (so concurrent batches finish out of order)."""
    rnd = np.random.default_rng(seed)
    words = ["dagster", "asset", "partition", "vector", "postgres", "chunk", "token", "index", "migrate", "docs"]
    return [f"doc {i}: " + " ".join(rnd.choice(words, size=int(rnd.integers(1, 120)))) for i in range(n)]


def embedder(server: EmbeddingTestServer, model: str = "text-embedding-3-small", **kw: object) -> OpenAIEmbedder:
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("backoff_max", 0.05)
    return OpenAIEmbedder(model, server.dims, api_key=KEY, base_url=server.base_url, **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ happy path
def test_order_preserved_across_concurrent_batches() -> None:
    texts = make_texts(1000)
    with EmbeddingTestServer(dims=64, api_key=KEY, slow_seconds=0.04, slow_rate=0.5) as srv:
        emb = embedder(srv, max_concurrency=4, max_inputs_per_request=37)
        as_protocol: Embedder = emb  # mypy checks that OpenAIEmbedder satisfies the protocol
        got = as_protocol.embed(texts)
        st = srv.stats
    assert got.dtype == np.float32 and got.shape == (1000, 64)
    np.testing.assert_allclose(got, srv.vectors_for(texts), atol=1e-6)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert st.duplicates() == {} and len(st.text_counts) == 1000
    assert st.max_inputs_per_request <= 37
    assert st.requests == math.ceil(1000 / 37) == emb.stats.requests
    assert st.slow > 0  # some batches really were delayed, so completion order was shuffled
    assert emb.stats.inputs == 1000 and emb.stats.retries == 0
    assert emb.stats.tokens == sum(count_tokens(t) for t in texts) == st.tokens
    assert emb.stats.seconds > 0 and emb.stats.errors == []
    assert st.requested_formats == {"base64": st.requests}
    assert emb.embed([]).shape == (0, 64)


def test_batches_never_exceed_api_limits() -> None:
    short = [f"short text {i}" for i in range(2500)]
    long = [f"{i} " + " hello" * 7990 for i in range(50)]  # ~8000 tokens each, 400k in all
    texts = short + long
    with EmbeddingTestServer(dims=16, api_key=KEY) as srv:
        emb = embedder(srv, max_concurrency=1)
        got = emb.embed(texts)
        st = srv.stats
    np.testing.assert_allclose(got, srv.vectors_for(texts), atol=1e-6)
    assert st.status_counts == {200: st.requests}  # the server enforces the limits with 400s
    assert st.max_inputs_per_request == 2048
    assert 250_000 < st.max_tokens_per_request <= 300_000
    total = sum(count_tokens(t) for t in texts)
    assert st.requests == math.ceil(total / 300_000) + 1  # full batches, not a request per chunk


def test_small_calls_are_spread_over_workers() -> None:
    texts = make_texts(400)
    with EmbeddingTestServer(dims=8, api_key=KEY) as srv:
        embedder(srv, max_concurrency=4).embed(texts)
        assert srv.stats.requests == 4


def test_dimensions_sent_only_to_text_embedding_3() -> None:
    texts = make_texts(20)
    with EmbeddingTestServer(dims=3072, api_key=KEY) as srv:
        got = OpenAIEmbedder("text-embedding-3-large", 256, api_key=KEY, base_url=srv.base_url).embed(texts)
        np.testing.assert_allclose(got, srv.vectors_for(texts, 256), atol=1e-6)
        assert srv.stats.dimensions == {256: srv.stats.requests}
    with EmbeddingTestServer(dims=48, api_key=KEY) as srv:
        got = OpenAIEmbedder("nomic-embed-text", 48, api_key=KEY, base_url=srv.base_url).embed(texts)
        np.testing.assert_allclose(got, srv.vectors_for(texts), atol=1e-6)
        assert srv.stats.dimensions == {} and srv.stats.status_counts == {200: srv.stats.requests}


# ------------------------------------------------------------------------------------ retries
def test_500s_and_garbage_still_give_identical_vectors() -> None:
    texts = make_texts(1200, seed=3)
    with EmbeddingTestServer(dims=48, api_key=KEY, seed=11) as clean:
        reference = embedder(clean, max_inputs_per_request=24).embed(texts)
    clear_shared_state()
    with EmbeddingTestServer(dims=48, api_key=KEY, fail_rate_500=0.2, garbage_rate=0.15, seed=11) as srv:
        emb = embedder(srv, max_inputs_per_request=24, max_retries=10)
        got = emb.embed(texts)
        st = srv.stats
    assert np.array_equal(got, reference)
    np.testing.assert_allclose(got, srv.vectors_for(texts), atol=1e-6)
    assert st.injected_500 >= 5 and st.garbage >= 3
    # every failure cost exactly one retry, nothing else was re-sent
    assert emb.stats.retries == st.injected_500 + st.garbage
    assert emb.stats.requests == st.requests == 50 + emb.stats.retries
    assert emb.stats.inputs == 1200
    assert emb.encoding_format == "base64"  # scattered garbage is not a broken base64 server


def test_timeouts_are_retried() -> None:
    texts = make_texts(200, seed=5)
    with EmbeddingTestServer(dims=16, api_key=KEY, slow_seconds=1.0, slow_rate=0.3, seed=2) as srv:
        emb = embedder(srv, max_inputs_per_request=20, timeout=0.3)
        start = time.monotonic()
        got = emb.embed(texts)
        elapsed = time.monotonic() - start
        slow = srv.stats.slow
    np.testing.assert_allclose(got, srv.vectors_for(texts), atol=1e-6)
    assert slow > 0 and emb.stats.retries == slow
    assert elapsed < 5


@pytest.mark.parametrize("tpm", [None, 10_000_000], ids=["no-ratelimit-headers", "with-ratelimit-headers"])
def test_429_retry_after_is_honoured_and_counted(tpm: int | None) -> None:
    """Without x-ratelimit headers the whole limiter pauses; with them (budget left) only the
    retried request waits: both paths must honour retry-after-ms."""
    texts = make_texts(60)
    with EmbeddingTestServer(dims=16, api_key=KEY, force_429_every=3, retry_after_seconds=0.3, tpm=tpm) as srv:
        emb = embedder(srv, max_concurrency=1, max_inputs_per_request=10)
        got = emb.embed(texts)
        log = list(srv.stats.log)
        limited = srv.stats.rate_limited
    np.testing.assert_allclose(got, srv.vectors_for(texts), atol=1e-6)
    assert limited >= 2 and emb.stats.retries == limited
    for (t, status, _), (t_next, _, _) in zip(log, log[1:], strict=False):
        if status == 429:
            assert t_next - t >= 0.29, "retried before retry-after-ms elapsed"


def test_connection_errors_retry_then_fail_clearly() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    emb = OpenAIEmbedder("text-embedding-3-small", 8, api_key=KEY, base_url=f"http://127.0.0.1:{port}/v1",
                         max_retries=2, backoff_base=0.01, backoff_max=0.02, timeout=2)
    with pytest.raises(OpenAIEmbeddingError, match="after 2 retries; last error: connection error"):
        emb.embed(["a"])
    assert emb.stats.retries == 2 and emb.stats.requests == 3
    assert emb.stats.errors and "connection error" in emb.stats.errors[0]


# ------------------------------------------------------------------------------------ terminal errors
def test_insufficient_quota_is_terminal() -> None:
    with EmbeddingTestServer(dims=8, api_key=KEY, insufficient_quota=True) as srv:
        emb = embedder(srv, backoff_base=1.0, backoff_max=5.0)
        start = time.monotonic()
        with pytest.raises(OpenAIEmbeddingError) as err:
            emb.embed(["a", "b", "c"])
        assert time.monotonic() - start < 1.0
        assert srv.stats.requests == 1
    assert err.value.status_code == 429 and err.value.code == "insufficient_quota"
    assert "quota" in str(err.value) and "not retried" in str(err.value)
    assert emb.stats.retries == 0


def test_bad_request_is_terminal_and_names_the_input() -> None:
    texts = [f"fine input {i}" for i in range(20)]
    culprit = "This paragraph is far too long for a server that accepts fifty tokens per input. " * 4
    texts[13] = culprit
    assert count_tokens(culprit) > 50
    with EmbeddingTestServer(dims=8, api_key=KEY, max_input_tokens=50) as srv:
        emb = embedder(srv, max_concurrency=1)
        with pytest.raises(OpenAIEmbeddingError) as err:
            emb.embed(texts)
        requests = srv.stats.requests
        refused = srv.stats.status_counts[400]
    msg = str(err.value)
    assert err.value.status_code == 400 and err.value.index == 13
    assert "offending input 13" in msg and "maximum context length" in msg and "not retried" in msg
    preview = msg.split("offending input 13: ", 1)[1].split("' (", 1)[0].strip("'")
    assert 0 < len(preview) <= 80 and culprit.startswith(preview.rstrip("…"))
    assert culprit not in msg
    assert emb.stats.retries == 0
    # the failed batch was never re-sent as such: the extra requests are the bisection's halves
    assert requests <= 1 + 2 * math.ceil(math.log2(20)) + 1
    assert refused <= 1 + math.ceil(math.log2(20))


def test_request_level_400_is_not_bisected() -> None:
    with EmbeddingTestServer(dims=8, api_key=KEY) as srv:
        emb = embedder(srv, model="text-embedding-ada-002", send_dimensions=True)
        with pytest.raises(OpenAIEmbeddingError, match="param=dimensions") as err:
            emb.embed(make_texts(10))
        assert srv.stats.requests == 1
    assert err.value.index is None


def test_401_message_never_contains_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-proj-SECRETSECRET1234567890"
    with EmbeddingTestServer(dims=8, api_key="the-right-key") as srv:
        emb = OpenAIEmbedder("text-embedding-3-small", 8, api_key=secret, base_url=srv.base_url)
        with pytest.raises(EmbeddingError) as err:
            emb.embed(["hello"])
        assert srv.stats.requests == 1  # not retried
        text = "".join(traceback.format_exception(err.value)) + repr(err.value) + " ".join(emb.stats.errors)
        assert "SECRETSECRET" not in text and "1234567890" not in text
        assert "401" in str(err.value) and "invalid_api_key" in str(err.value)
        assert err.value.__cause__ is None and err.value.__suppress_context__

        # the key falls back to OPENAI_API_KEY, as the SDK does
        monkeypatch.setenv("OPENAI_API_KEY", "the-right-key")
        assert OpenAIEmbedder("text-embedding-3-small", 8, base_url=srv.base_url).embed(["hi"]).shape == (1, 8)
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(EmbeddingError, match="OPENAI_API_KEY"):
        OpenAIEmbedder("text-embedding-3-small", 8, base_url=srv.base_url)


def test_invalid_inputs_are_refused_before_sending() -> None:
    with EmbeddingTestServer(dims=8, api_key=KEY) as srv:
        emb = embedder(srv)
        with pytest.raises(EmbeddingError, match="input 1 is empty"):
            emb.embed(["ok", "  \n"])
        with pytest.raises(EmbeddingError, match="input 0 is empty"):
            emb.embed([""])
        too_long = "start of a huge chunk " + " hello" * 9000
        with pytest.raises(EmbeddingError) as err:
            emb.embed(["a", "b", too_long])
        msg = str(err.value)
        assert "input 2 has" in msg and "8191" in msg
        assert "start of a huge chunk" in msg and len(msg) < 250
        with pytest.raises(TypeError):
            emb.embed("not a list")
        assert srv.stats.requests == 0


def test_wrong_model_size_fails_fast() -> None:
    with EmbeddingTestServer(dims=32, api_key=KEY) as srv:
        emb = OpenAIEmbedder("nomic-embed-text", 64, api_key=KEY, base_url=srv.base_url, backoff_base=0.01)
        start = time.monotonic()
        with pytest.raises(OpenAIEmbeddingError, match="got 32 dimensions, expected 64"):
            emb.embed(["a", "b"])
        assert time.monotonic() - start < 2 and emb.stats.retries == 1


# ------------------------------------------------------------------------------------ rate limits
W = 1.5  # the server's and the client's window in these tests, instead of a minute
TPM = 100_000


def _tpm_texts() -> list[str]:
    texts = make_texts(3400, seed=9)
    total = sum(count_tokens(t) for t in texts)
    assert 2.2 * TPM < total < 2.8 * TPM  # a bit more than two windows' worth
    return texts


def test_tpm_cap_is_used_but_not_exceeded() -> None:
    texts = _tpm_texts()
    with EmbeddingTestServer(dims=16, api_key=KEY, tpm=TPM, window_seconds=W) as srv:
        emb = embedder(srv, tpm=TPM, rate_window_seconds=W)
        start = time.monotonic()
        got = emb.embed(texts)
        elapsed = time.monotonic() - start
        st = srv.stats
    np.testing.assert_allclose(got, srv.vectors_for(texts), atol=1e-6)
    assert st.rate_limited == 0 and emb.stats.retries == 0
    windows = st.tokens_per_window(W)
    assert len(windows) == 3
    assert all(w >= 0.85 * TPM for w in windows[:-1]), windows  # full windows are >= 85 % used
    assert st.max_tokens_in_window(W) <= TPM
    assert elapsed >= 2 * W  # the limiter did hold requests back
    assert st.max_tokens_per_request <= TPM // 8  # requests small enough to refill smoothly


def test_tpm_cap_learned_from_headers() -> None:
    texts = _tpm_texts()
    with EmbeddingTestServer(dims=16, api_key=KEY, tpm=TPM, window_seconds=W) as srv:
        emb = embedder(srv, rate_window_seconds=W)  # no tpm configured
        got = emb.embed(texts)
        st = srv.stats
    np.testing.assert_allclose(got, srv.vectors_for(texts), atol=1e-6)
    assert emb.limiter.tpm == TPM
    assert st.rate_limited <= 4  # only the first burst, sent before any header was seen
    assert emb.stats.retries == st.rate_limited
    windows = st.tokens_per_window(W)
    assert windows[1] >= 0.85 * TPM, windows


def test_rpm_cap() -> None:
    with EmbeddingTestServer(dims=8, api_key=KEY, rpm=10, window_seconds=0.5) as srv:
        emb = embedder(srv, rpm=10, rate_window_seconds=0.5, max_inputs_per_request=1)
        emb.embed(make_texts(25))
        assert srv.stats.rate_limited == 0 and srv.stats.requests == 25


# ------------------------------------------------------------------------------------ formats
def test_ollama_like_server_float_lists() -> None:
    texts = make_texts(90)
    with EmbeddingTestServer(dims=32, api_key=KEY, ignore_encoding_format=True) as srv:
        emb = OpenAIEmbedder("nomic-embed-text", 32, api_key=KEY, base_url=srv.base_url, max_concurrency=1,
                             max_inputs_per_request=30)
        got = emb.embed(texts)
        asked = srv.stats.requested_formats
    np.testing.assert_allclose(got, srv.vectors_for(texts), atol=1e-6)
    assert emb.encoding_format == "float" and emb.stats.retries == 0
    assert asked == {"base64": 1, "float": 2}  # stopped asking base64 after the first answer


def test_garbage_base64_falls_back_to_float() -> None:
    texts = make_texts(90)
    with EmbeddingTestServer(dims=32, api_key=KEY, base64_as_float64=True) as srv:
        emb = embedder(srv, max_concurrency=1, max_inputs_per_request=30)
        got = emb.embed(texts)
        asked = srv.stats.requested_formats
    np.testing.assert_allclose(got, srv.vectors_for(texts), atol=1e-6)
    assert emb.encoding_format == "float" and emb.stats.retries == 1
    assert asked == {"base64": 1, "float": 3}


# ------------------------------------------------------------------------------------ plumbing
def test_limiter_and_pool_shared_per_base_url_and_model() -> None:
    with EmbeddingTestServer(dims=8, api_key=KEY) as srv:
        a = embedder(srv, tpm=5000)
        b = embedder(srv)
        c = embedder(srv, model="text-embedding-3-large")
        assert a.shared is b.shared and a.limiter.tpm == 5000
        assert c.shared is not a.shared
        private = embedder(srv, share_limits=False)
        assert private.shared is not a.shared
        private.close()


def test_from_config_and_cost() -> None:
    emb = OpenAIEmbedder.from_config({"model": "text-embedding-3-small", "dims": 8, "api_key": KEY,
                                      "base_url": "http://127.0.0.1:9/v1", "tpm": None})
    assert emb.model == "text-embedding-3-small" and emb.dims == 8 and emb.send_dimensions
    with pytest.raises(ValueError, match="unknown"):
        OpenAIEmbedder.from_config({"modle": "x"})
    assert estimate_cost(1_000_000, "text-embedding-3-large") == pytest.approx(0.13)
    assert estimate_cost(2_000_000, "text-embedding-3-small") == pytest.approx(0.04)
    assert estimate_cost(500_000, "text-embedding-ada-002") == pytest.approx(0.05)
    assert estimate_cost(10**6, "nomic-embed-text") == 0.0
    assert estimate_cost(10**6, "nomic-embed-text", {"nomic-embed-text": 0.01}) == pytest.approx(0.01)
    assert set(DEFAULT_PRICES) == {"text-embedding-3-large", "text-embedding-3-small", "text-embedding-ada-002"}
    assert emb.cost() == 0.0
