"""The local OpenAI-compatible server enforces OpenAI's limits and injects failures on demand.

These tests speak raw HTTP (urllib), independent of the client under test, so a bug in the
embedder cannot hide a bug in the server that is supposed to catch it.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from doc_migration.tokens import count_tokens
from testkit.embedding_server import EmbeddingTestServer, expected_vectors, format_duration

REPO = Path(__file__).resolve().parents[2]
MODEL = "text-embedding-3-small"


def post(server: EmbeddingTestServer, body: Any, key: str | None = None) -> tuple[int, dict[str, str], bytes]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(server.base_url + "/embeddings", data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def vectors(payload: bytes) -> np.ndarray:
    data = json.loads(payload)["data"]
    rows = []
    for item in sorted(data, key=lambda d: d["index"]):
        emb = item["embedding"]
        rows.append(np.frombuffer(base64.b64decode(emb), "<f4") if isinstance(emb, str) else np.asarray(emb, "f4"))
    return np.stack(rows)


def error_of(payload: bytes) -> dict[str, Any]:
    err = json.loads(payload)["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return dict(err)


@pytest.fixture()
def server() -> Iterator[EmbeddingTestServer]:
    with EmbeddingTestServer(dims=96, tpm=10_000_000, rpm=100_000) as srv:
        yield srv


# ------------------------------------------------------------------------------------ vectors
def test_vectors_are_deterministic_unit_and_format_independent(server: EmbeddingTestServer) -> None:
    texts = ["alpha", "beta", "gamma delta", "alpha"]
    status, _, b64 = post(server, {"model": MODEL, "input": texts, "encoding_format": "base64"})
    assert status == 200
    status, _, flt = post(server, {"model": MODEL, "input": texts})  # default: float
    assert status == 200
    v64, vf = vectors(b64), vectors(flt)
    assert v64.shape == (4, 96)
    assert np.array_equal(v64, vf)
    assert np.array_equal(v64, server.vectors_for(texts))
    assert np.array_equal(v64, expected_vectors(texts, 96))  # same for any server of (dims, seed)
    assert np.array_equal(v64[0], v64[3]) and not np.allclose(v64[0], v64[1])
    assert np.allclose(np.linalg.norm(v64, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(expected_vectors(texts, 96, seed=1), v64)
    usage = json.loads(b64)["usage"]
    assert usage["prompt_tokens"] == usage["total_tokens"] == sum(count_tokens(t) for t in texts)


def test_fast_path_equals_numeric_path_at_3072() -> None:
    texts = [f"chunk {i} of some documentation" for i in range(50)]
    with EmbeddingTestServer(dims=3072) as srv:
        status, _, payload = post(srv, {"model": MODEL, "input": texts, "encoding_format": "base64"})
    assert status == 200
    got = vectors(payload)
    assert np.array_equal(got, srv.vectors_for(texts))
    # 50 distinct texts give 50 distinct vectors
    assert len({row.tobytes() for row in got}) == 50


def test_dimensions_truncate_and_renormalise(server: EmbeddingTestServer) -> None:
    texts = ["one", "two"]
    status, _, payload = post(server, {"model": MODEL, "input": texts, "dimensions": 24, "encoding_format": "base64"})
    assert status == 200
    got = vectors(payload)
    full = server.vectors_for(texts)[:, :24]
    assert np.allclose(got, full / np.linalg.norm(full, axis=1, keepdims=True), atol=1e-6)
    assert server.stats.dimensions[24] == 1


# ------------------------------------------------------------------------------------ limits
def test_request_limits_are_enforced_with_openai_errors(server: EmbeddingTestServer) -> None:
    status, headers, payload = post(server, {"model": MODEL, "input": ["x"] * 2049})
    assert status == 400 and error_of(payload)["type"] == "invalid_request_error"
    assert "x-ratelimit-limit-tokens" in headers  # on every response, errors included

    status, _, payload = post(server, {"model": MODEL, "input": ["ok", ""]})
    assert status == 400 and error_of(payload)["param"] == "input"

    long_input = " hello" * 8192
    assert count_tokens(long_input) == 8192
    status, _, payload = post(server, {"model": MODEL, "input": ["fine", long_input]})
    assert status == 400 and "maximum context length" in error_of(payload)["message"]
    status, _, _ = post(server, {"model": MODEL, "input": [" hello" * 8191]})
    assert status == 200

    big = [" hello" * 8000] * 38  # 304,000 tokens
    status, _, payload = post(server, {"model": MODEL, "input": big})
    assert status == 400 and error_of(payload)["code"] == "max_tokens_per_request"
    status, _, _ = post(server, {"model": MODEL, "input": big[:37]})
    assert status == 200
    assert server.stats.max_tokens_per_request == 296_000

    status, _, payload = post(server, {"model": "text-embedding-ada-002", "input": ["a"], "dimensions": 8})
    assert status == 400 and error_of(payload)["param"] == "dimensions"
    status, _, payload = post(server, {"input": ["a"]})
    assert status == 400 and error_of(payload)["param"] == "model"
    status, _, _ = post(server, b"{not json")
    assert status == 400
    assert server.stats.ok == 2


def test_auth_401_does_not_echo_the_key() -> None:
    with EmbeddingTestServer(dims=8, api_key="right-key") as srv:
        status, headers, payload = post(srv, {"model": MODEL, "input": ["a"]}, key="sk-wrong-SECRET-123456")
        assert status == 401
        err = error_of(payload)
        assert err["code"] == "invalid_api_key"
        assert b"SECRET" not in payload and b"123456" not in payload
        assert post(srv, {"model": MODEL, "input": ["a"]})[0] == 401
        assert post(srv, {"model": MODEL, "input": ["a"]}, key="right-key")[0] == 200


def test_tpm_window_429_with_retry_headers() -> None:
    with EmbeddingTestServer(dims=8, tpm=100, window_seconds=0.6) as srv:
        text = " hello" * 60
        status, headers, _ = post(srv, {"model": MODEL, "input": [text]})
        assert status == 200
        assert headers["x-ratelimit-limit-tokens"] == "100"
        assert headers["x-ratelimit-remaining-tokens"] == "40"
        status, headers, payload = post(srv, {"model": MODEL, "input": [text]})
        assert status == 429
        assert error_of(payload)["code"] == "rate_limit_exceeded"
        wait_ms = int(headers["retry-after-ms"])
        assert 0 < wait_ms <= 600 and headers["retry-after"] == "1"
        assert headers["x-ratelimit-remaining-tokens"] == "40"
        time.sleep(wait_ms / 1000 + 0.05)
        assert post(srv, {"model": MODEL, "input": [text]})[0] == 200
        # a request larger than the whole budget can never pass
        status, _, payload = post(srv, {"model": MODEL, "input": [" hello" * 101]})
        assert status == 429 and "Request too large" in error_of(payload)["message"]
        assert srv.stats.rate_limited == 2
        assert srv.stats.max_tokens_in_window(0.6) <= 100


def test_rpm_window() -> None:
    with EmbeddingTestServer(dims=8, rpm=3, window_seconds=0.5) as srv:
        statuses = [post(srv, {"model": MODEL, "input": ["a"]})[0] for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        time.sleep(0.55)
        status, headers, _ = post(srv, {"model": MODEL, "input": ["a"]})
        assert status == 200 and headers["x-ratelimit-limit-requests"] == "3"


# ------------------------------------------------------------------------------------ injected failures
def test_forced_429_and_insufficient_quota() -> None:
    with EmbeddingTestServer(dims=8, force_429_every=2, retry_after_seconds=0.25) as srv:
        statuses = [post(srv, {"model": MODEL, "input": ["a"]}) for _ in range(4)]
        assert [s for s, _, _ in statuses] == [200, 429, 200, 429]
        assert statuses[1][1]["retry-after-ms"] == "250"
        srv.force_429_every = 0
        srv.insufficient_quota = True
        status, _, payload = post(srv, {"model": MODEL, "input": ["a"]})
        assert status == 429 and error_of(payload)["code"] == "insufficient_quota"
        assert error_of(payload)["type"] == "insufficient_quota"


def test_500_garbage_and_slow_switches() -> None:
    with EmbeddingTestServer(dims=12, fail_rate_500=1.0) as srv:
        status, headers, payload = post(srv, {"model": MODEL, "input": ["a"]})
        assert status == 500 and error_of(payload)["type"] == "server_error"
        assert srv.stats.injected_500 == 1 and srv.stats.text_counts["a"] == 0

        srv.fail_rate_500 = 0.0
        texts = ["a", "b", "c"]
        for mode in ("invalid_json", "wrong_length", "nan", "wrong_count"):
            srv.garbage_rate, srv.garbage_modes = 1.0, (mode,)
            for fmt in ("float", "base64"):
                status, _, payload = post(srv, {"model": MODEL, "input": texts, "encoding_format": fmt})
                assert status == 200
                if mode == "invalid_json":
                    with pytest.raises(ValueError):
                        json.loads(payload)
                    continue
                data = json.loads(payload)["data"]
                if mode == "wrong_count":
                    assert len(data) == 2
                    continue
                got = [np.frombuffer(base64.b64decode(d["embedding"]), "<f4") if fmt == "base64"
                       else np.asarray(d["embedding"], "f4") for d in data]
                if mode == "wrong_length":
                    assert sorted(len(v) for v in got)[0] == 6
                else:
                    assert sum(int(np.isnan(v).any()) for v in got) == 1
        assert srv.stats.garbage == 8

        srv.garbage_rate = 0.0
        srv.slow_seconds = 0.3
        start = time.monotonic()
        assert post(srv, {"model": MODEL, "input": ["a"]})[0] == 200
        assert time.monotonic() - start >= 0.3


def test_ollama_like_and_broken_base64_modes() -> None:
    with EmbeddingTestServer(dims=16, ignore_encoding_format=True) as srv:
        status, _, payload = post(srv, {"model": "nomic-embed-text", "input": ["a"], "encoding_format": "base64",
                                        "dimensions": 4})
        assert status == 200
        emb = json.loads(payload)["data"][0]["embedding"]
        assert isinstance(emb, list) and len(emb) == 16  # both parameters ignored
    with EmbeddingTestServer(dims=16, base64_as_float64=True) as srv:
        _, _, payload = post(srv, {"model": MODEL, "input": ["a"], "encoding_format": "base64"})
        emb = json.loads(payload)["data"][0]["embedding"]
        assert len(base64.b64decode(emb)) == 16 * 8


def test_stats_windows_and_duplicates() -> None:
    with EmbeddingTestServer(dims=8, window_seconds=0.3) as srv:
        post(srv, {"model": MODEL, "input": ["a b", "c"]})
        post(srv, {"model": MODEL, "input": ["a b"]})
        time.sleep(0.35)
        post(srv, {"model": MODEL, "input": ["d"]})
        st = srv.stats
        assert st.requests == 3 and st.inputs == 4 and st.max_inputs_per_request == 2
        assert st.duplicates() == {"a b": 2}
        assert st.tokens_per_window(0.3) == [5, 1]
        assert st.max_tokens_in_window(0.3) == 5
        assert [status for _, status, _ in st.log] == [200, 200, 200]


def test_format_duration() -> None:
    assert format_duration(360) == "6m0s"
    assert format_duration(1) == "1s"
    assert format_duration(0.02) == "20ms"
    assert format_duration(1.5) == "1.5s"


def test_server_is_fast_enough_for_full_batches() -> None:
    """A 2048-input, 3072-dims base64 request must cost the server well under 0.1 s (>10 req/s
    per core; the benchmark measured far more), or benchmarks would measure the server."""
    srv = EmbeddingTestServer(dims=3072)
    texts = [f"text number {i} with some words in it" for i in range(2048)]
    body = json.dumps({"model": MODEL, "input": texts, "encoding_format": "base64"}).encode()
    srv.handle("POST", "/v1/embeddings", {}, body)  # warm-up builds the base64 tables
    times = []
    for _ in range(5):
        start = time.perf_counter()
        status, _, payload = srv.handle("POST", "/v1/embeddings", {}, body)
        times.append(time.perf_counter() - start)
        assert status == 200
    assert sorted(times)[2] < 0.1
    whole = EmbeddingTestServer.response_bytes(payload)
    assert np.array_equal(vectors(whole)[:5], srv.vectors_for(texts[:5]))


def test_cli_serves_and_reports() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "testkit.embedding_server", "--port", "0", "--dims", "8",
         "--tpm", "1000000"],
        stdout=subprocess.PIPE, text=True, env=env, cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line
        url = line.strip().rsplit(" ", 1)[-1]
        req = urllib.request.Request(url + "/embeddings", data=json.dumps({"model": MODEL, "input": ["a"]}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200
            assert resp.headers["x-ratelimit-limit-tokens"] == "1000000"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["requests"] == 1 and summary["tokens"] == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
