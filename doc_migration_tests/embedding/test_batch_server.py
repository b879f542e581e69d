"""The local server's Files and Batch APIs, driven by the real ``openai`` client.

Why the real client: the pipeline's batch path will use it unchanged, so the server must speak
exactly its wire format (multipart upload, binary content download, cursor pages, the Batch
object's fields). The clock hook keeps every state transition deterministic and instant.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import openai
import pytest

from doc_migration.tokens import count_tokens
from testkit.embedding_server import EmbeddingTestServer

KEY = "sk-test-batch-key"
MODEL = "text-embedding-3-large"
T0 = 1_800_000_000.0


def client_for(server: EmbeddingTestServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0, timeout=30)


def request_line(custom_id: str, texts: Any, **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/embeddings",
            "body": {"model": MODEL, "input": texts, "encoding_format": "base64", **body}}


def jsonl(lines: list[Any]) -> bytes:
    return b"".join((line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines)


def submit(client: openai.OpenAI, lines: list[Any], **metadata: str) -> str:
    uploaded = client.files.create(file=("requests.jsonl", jsonl(lines)), purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h",
                                  metadata=metadata or None)
    assert batch.status == "validating" and batch.input_file_id == uploaded.id
    return batch.id


def read_lines(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def decode(body: dict[str, Any]) -> np.ndarray:
    rows = []
    for item in sorted(body["data"], key=lambda d: d["index"]):
        emb = item["embedding"]
        rows.append(np.frombuffer(base64.b64decode(emb), "<f4") if isinstance(emb, str) else np.asarray(emb, "f4"))
    return np.stack(rows)


@pytest.fixture()
def server() -> Iterator[EmbeddingTestServer]:
    with EmbeddingTestServer(dims=24, api_key=KEY, batch_clock=lambda: T0) as srv:
        yield srv


# ------------------------------------------------------------------------------------ happy path
def test_round_trip_gives_the_synchronous_vectors(server: EmbeddingTestServer) -> None:
    client = client_for(server)
    groups = {f"chunk-{i}": [f"document {i} part {j}" for j in range(1 + i % 3)] for i in range(30)}
    lines = [request_line(cid, texts) for cid, texts in groups.items()]
    lines.append(request_line("floats", ["as floats"], encoding_format="float"))
    lines.append(request_line("short", ["truncated"], dimensions=8))
    batch_id = submit(client, lines, run="r1")

    batch = client.batches.retrieve(batch_id)
    assert batch.status == "completed" and batch.errors is None and batch.error_file_id is None
    assert batch.model == MODEL and batch.metadata == {"run": "r1"} and batch.endpoint == "/v1/embeddings"
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (32, 32, 0)
    assert batch.created_at == batch.in_progress_at == batch.finalizing_at == batch.completed_at == int(T0)
    assert batch.expires_at == int(T0) + 24 * 3600
    all_texts = [t for texts in groups.values() for t in texts] + ["as floats", "truncated"]
    assert batch.usage is not None and batch.usage.input_tokens == sum(count_tokens(t) for t in all_texts)

    assert batch.output_file_id is not None
    output = client.files.retrieve(batch.output_file_id)
    assert output.purpose == "batch_output" and output.filename.endswith(".jsonl")
    results = read_lines(client, batch.output_file_id)
    assert output.bytes == len(client.files.content(batch.output_file_id).content)
    got = [r["custom_id"] for r in results]
    assert sorted(got) == sorted(groups) + ["floats", "short"] and sorted(got) == sorted(set(got))
    assert got[:32] != list(groups)[:32], "output is unordered, as OpenAI's is"
    by_id = {r["custom_id"]: r for r in results}
    for r in results:
        assert r["error"] is None and r["id"].startswith("batch_req_")
        assert r["response"]["status_code"] == 200 and r["response"]["request_id"]

    # the same inputs through the synchronous endpoint give the same vectors, bit for bit
    for cid, texts in groups.items():
        sync = client.embeddings.with_raw_response.create(model=MODEL, input=texts, encoding_format="base64")
        assert by_id[cid]["response"]["body"] == json.loads(sync.text)
        assert np.array_equal(decode(by_id[cid]["response"]["body"]), server.vectors_for(texts))
    assert isinstance(by_id["floats"]["response"]["body"]["data"][0]["embedding"], list)
    assert np.array_equal(decode(by_id["floats"]["response"]["body"]), server.vectors_for(["as floats"]))
    assert np.allclose(decode(by_id["short"]["response"]["body"]), server.vectors_for(["truncated"], 8))
    assert server.stats.batch_embedded_text_counts == {t: 1 for t in all_texts}


def test_states_follow_the_clock() -> None:
    with EmbeddingTestServer(dims=8, api_key=KEY, batch_clock=lambda: T0, batch_validating_seconds=10,
                             batch_seconds=100, batch_finalizing_seconds=5) as srv:
        client = client_for(srv)
        batch_id = submit(client, [request_line(f"c{i}", [f"text {i}"]) for i in range(10)])
        batch = client.batches.retrieve(batch_id)
        assert batch.status == "validating" and batch.request_counts is not None
        assert batch.request_counts.total == 0
        srv.advance(10)
        batch = client.batches.retrieve(batch_id)
        assert batch.status == "in_progress" and batch.in_progress_at == int(T0) + 10
        assert batch.request_counts is not None and batch.request_counts.total == 10
        assert batch.request_counts.completed == 0
        srv.advance(50)
        batch = client.batches.retrieve(batch_id)
        assert batch.status == "in_progress" and batch.request_counts is not None
        assert batch.request_counts.completed == 5 and batch.output_file_id is None
        srv.advance(50)
        batch = client.batches.retrieve(batch_id)
        assert batch.status == "finalizing" and batch.finalizing_at == int(T0) + 110
        srv.advance(5)
        batch = client.batches.retrieve(batch_id)
        assert batch.status == "completed" and batch.completed_at == int(T0) + 115
        assert len(read_lines(client, batch.output_file_id)) == 10


def test_real_time_advances_too() -> None:
    """Without a clock hook the states move with wall time (here instantly, ``batch_seconds=0``)."""
    with EmbeddingTestServer(dims=8) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="any", max_retries=0)
        batch_id = submit(client, [request_line("only", "one text")])
        batch = client.batches.retrieve(batch_id)
        assert batch.status == "completed" and len(read_lines(client, batch.output_file_id)) == 1


# ------------------------------------------------------------------------------------ expiry, cancel, failures
def test_expiry_gives_partial_output_and_batch_expired_errors() -> None:
    with EmbeddingTestServer(dims=8, api_key=KEY, batch_clock=lambda: T0, batch_seconds=100,
                             batch_expiry_seconds=40) as srv:
        client = client_for(srv)
        ids = [f"c{i}" for i in range(20)]
        batch_id = submit(client, [request_line(cid, [cid]) for cid in ids])
        srv.advance(39)
        assert client.batches.retrieve(batch_id).status == "in_progress"
        srv.advance(1)
        batch = client.batches.retrieve(batch_id)
        assert batch.status == "expired" and batch.expired_at == int(T0) + 40
        assert batch.request_counts is not None
        assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (20, 8, 0)
        done = read_lines(client, batch.output_file_id)
        rest = read_lines(client, batch.error_file_id)
        assert len(done) == 8 and len(rest) == 12
        assert sorted(r["custom_id"] for r in done + rest) == sorted(ids)
        for r in rest:
            assert r["response"] is None and r["error"]["code"] == "batch_expired"
        assert srv.stats.batch_final_statuses == {"expired": 1}


def test_cancel_stops_the_batch_and_keeps_what_ran() -> None:
    with EmbeddingTestServer(dims=8, api_key=KEY, batch_clock=lambda: T0, batch_seconds=100,
                             batch_cancelling_seconds=5) as srv:
        client = client_for(srv)
        batch_id = submit(client, [request_line(f"c{i}", [f"text {i}"]) for i in range(10)])
        srv.advance(30)
        cancelling = client.batches.cancel(batch_id)
        assert cancelling.status == "cancelling" and cancelling.cancelling_at == int(T0) + 30
        srv.advance(20)
        batch = client.batches.retrieve(batch_id)
        assert batch.status == "cancelled" and batch.cancelled_at == int(T0) + 35
        assert batch.request_counts is not None and batch.request_counts.completed == 3
        assert len(read_lines(client, batch.output_file_id)) == 3
        errors = read_lines(client, batch.error_file_id)
        assert len(errors) == 7 and {r["error"]["code"] for r in errors} == {"batch_cancelled"}
        with pytest.raises(openai.BadRequestError):
            client.batches.cancel(batch_id)

        srv.batch_validating_seconds = 10
        early = submit(client, [request_line("x", ["x"])])  # cancelled while validating: nothing ran
        assert client.batches.cancel(early).status == "cancelling"
        srv.advance(5)
        batch = client.batches.retrieve(early)
        assert batch.status == "cancelled" and batch.output_file_id is None and batch.error_file_id is None
        assert srv.stats.batches_cancelled == 2
        with pytest.raises(openai.NotFoundError):
            client.batches.cancel("batch_missing")


def test_partial_failures_go_to_the_error_file() -> None:
    with EmbeddingTestServer(dims=8, api_key=KEY, batch_clock=lambda: T0,
                             batch_fail_custom_ids={"c3", "c7"}) as srv:
        client = client_for(srv)
        lines = [request_line(f"c{i}", [f"text {i}"]) for i in range(10)]
        lines.append(request_line("empty", ["fine", ""]))  # run, and refused as the endpoint refuses it
        lines.append(request_line("too-many", ["x"] * 2049))
        batch = client.batches.retrieve(submit(client, lines))
        assert batch.status == "completed" and batch.request_counts is not None
        assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (12, 8, 4)
        ok = {r["custom_id"] for r in read_lines(client, batch.output_file_id)}
        assert ok == {f"c{i}" for i in range(10)} - {"c3", "c7"}
        errors = {r["custom_id"]: r for r in read_lines(client, batch.error_file_id)}
        assert set(errors) == {"c3", "c7", "empty", "too-many"}
        assert errors["c3"]["response"]["status_code"] == 500 and errors["c3"]["error"] is None
        assert errors["c3"]["response"]["body"]["error"]["type"] == "server_error"
        assert errors["empty"]["response"]["status_code"] == 400
        assert errors["empty"]["response"]["body"]["error"]["param"] == "input"
        assert errors["too-many"]["response"]["status_code"] == 400

        srv.batch_fail_custom_ids = ()
        srv.batch_fail_rate = 1.0
        batch = client.batches.retrieve(submit(client, lines[:3]))
        assert batch.status == "completed" and batch.output_file_id is None
        assert len(read_lines(client, batch.error_file_id)) == 3


def test_fail_rate_is_deterministic() -> None:
    def failed_ids() -> set[str]:
        with EmbeddingTestServer(dims=8, api_key=KEY, batch_fail_rate=0.3, seed=5) as srv:
            client = client_for(srv)
            batch = client.batches.retrieve(submit(client, [request_line(f"c{i}", [f"t{i}"]) for i in range(40)]))
            return {r["custom_id"] for r in read_lines(client, batch.error_file_id)}
    first = failed_ids()
    assert 0 < len(first) < 40 and failed_ids() == first


# ------------------------------------------------------------------------------------ validation
def failed_codes(client: openai.OpenAI, batch_id: str) -> list[tuple[str | None, int | None]]:
    batch = client.batches.retrieve(batch_id)
    assert batch.status == "failed" and batch.failed_at is not None and batch.output_file_id is None
    assert batch.errors is not None and batch.errors.data is not None
    return [(e.code, e.line) for e in batch.errors.data]


def test_bad_lines_fail_the_batch_with_errors(server: EmbeddingTestServer) -> None:
    client = client_for(server)
    good = request_line("a", ["a"])
    lines: list[Any] = [
        good,
        b"{not json",
        request_line("a", ["again"]),
        {**request_line("get", ["x"]), "method": "GET"},
        {**request_line("url", ["x"]), "url": "/v1/chat/completions"},
        {"custom_id": "nobody", "method": "POST", "url": "/v1/embeddings"},
        {"custom_id": "nomodel", "method": "POST", "url": "/v1/embeddings", "body": {"input": "x"}},
        request_line("other-model", ["x"], model="text-embedding-3-small"),
    ]
    assert failed_codes(client, submit(client, lines)) == [
        ("invalid_json_line", 2), ("duplicate_custom_id", 3), ("invalid_value", 4), ("url_mismatch", 5),
        ("missing_required_parameter", 6), ("missing_required_parameter", 7), ("model_mismatch", 8)]
    batch = client.batches.list().data[0]
    assert batch.request_counts is not None and batch.request_counts.total == 0

    empty = client.files.create(file=("empty.jsonl", b""), purpose="batch")
    batch_id = client.batches.create(input_file_id=empty.id, endpoint="/v1/embeddings", completion_window="24h").id
    assert failed_codes(client, batch_id) == [("empty_file", None)]
    assert server.stats.batch_final_statuses == {"failed": 2}


def test_request_and_input_limits_per_batch() -> None:
    with EmbeddingTestServer(dims=8, api_key=KEY, batch_max_requests=3, batch_max_inputs=5) as srv:
        client = client_for(srv)
        assert failed_codes(client, submit(client, [request_line(f"c{i}", "x") for i in range(4)])) == [
            ("too_many_tasks", None)]
        assert failed_codes(client, submit(client, [request_line("a", ["x"] * 3), request_line("b", ["y"] * 3)])) == [
            ("too_many_tasks", None)]
        ok = client.batches.retrieve(submit(client, [request_line("a", ["x"] * 3), request_line("b", ["y"] * 2)]))
        assert ok.status == "completed"
    assert EmbeddingTestServer().batch_max_requests == 50_000 == EmbeddingTestServer().batch_max_inputs


def test_enqueued_token_limit() -> None:
    with EmbeddingTestServer(dims=8, api_key=KEY, batch_clock=lambda: T0, batch_seconds=100,
                             batch_enqueued_token_limit={MODEL: 10}) as srv:
        client = client_for(srv)
        first = submit(client, [request_line("a", [" hello" * 6])])  # 6 tokens
        srv.advance(1)
        assert client.batches.retrieve(first).status == "in_progress"
        second = submit(client, [request_line("b", [" hello" * 5])])
        srv.advance(1)
        assert failed_codes(client, second) == [("token_limit_exceeded", None)]
        message = client.batches.retrieve(second).errors.data[0].message  # type: ignore[union-attr,index]
        assert message is not None and "Limit: 10 enqueued tokens" in message
        other = client.files.create(file=("small.jsonl", jsonl([request_line("s", ["x"], model="text-embedding-3-small")])),
                                    purpose="batch")
        unlimited = client.batches.create(input_file_id=other.id, endpoint="/v1/embeddings", completion_window="24h")
        srv.advance(100)  # the first batch completes: its tokens are no longer enqueued
        assert client.batches.retrieve(first).status == "completed"
        assert client.batches.retrieve(unlimited.id).status == "completed"
        third = submit(client, [request_line("c", [" hello" * 5])])
        srv.advance(100)
        assert client.batches.retrieve(third).status == "completed"


def test_create_rejects_what_openai_rejects(server: EmbeddingTestServer) -> None:
    client = client_for(server)
    uploaded = client.files.create(file=("r.jsonl", jsonl([request_line("a", "x")])), purpose="batch")
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id="file-missing", endpoint="/v1/embeddings", completion_window="24h")
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings",
                              completion_window="1h")  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=uploaded.id, endpoint="/v1/other",  # type: ignore[arg-type]
                              completion_window="24h")
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h",
                              metadata={f"k{i}": "v" for i in range(17)})
    other = client.files.create(file=("notes.txt", b"hello"), purpose="user_data")
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=other.id, endpoint="/v1/embeddings", completion_window="24h")
    assert server.stats.batches_created == 0


# ------------------------------------------------------------------------------------ files
def test_files_upload_limits_and_lifecycle() -> None:
    with EmbeddingTestServer(dims=8, api_key=KEY, max_file_bytes=1000) as srv:
        client = client_for(srv)
        with pytest.raises(openai.BadRequestError) as too_big:
            client.files.create(file=("big.jsonl", b"x" * 1001), purpose="batch")
        assert too_big.value.status_code == 400 and "too large" in str(too_big.value)
        with pytest.raises(openai.BadRequestError):
            client.files.create(file=("requests.json", b"{}"), purpose="batch")
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=srv.base_url, api_key="wrong", max_retries=0).files.list()

        data = jsonl([request_line("a", "x")])
        uploaded = client.files.create(file=("fits.jsonl", data), purpose="batch")
        assert (uploaded.bytes, uploaded.filename, uploaded.purpose) == (len(data), "fits.jsonl", "batch")
        assert uploaded.id.startswith("file-") and uploaded.expires_at == uploaded.created_at + 30 * 24 * 3600
        assert client.files.retrieve(uploaded.id) == uploaded
        assert client.files.content(uploaded.id).content == data
        assert [f.id for f in client.files.list(purpose="batch")] == [uploaded.id]
        deleted = client.files.delete(uploaded.id)
        assert deleted.deleted and deleted.id == uploaded.id
        with pytest.raises(openai.NotFoundError):
            client.files.retrieve(uploaded.id)
        with pytest.raises(openai.NotFoundError):
            client.files.content(uploaded.id)
        assert (srv.stats.files_uploaded, srv.stats.files_deleted) == (1, 1)
    assert EmbeddingTestServer().max_file_bytes == 200_000_000


def test_list_pagination(server: EmbeddingTestServer) -> None:
    client = client_for(server)
    ids = []
    for i in range(5):
        ids.append(submit(client, [request_line(f"c{i}", f"text {i}")]))
        server.advance(1)  # distinct created_at
    newest_first = ids[::-1]
    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == newest_first[:2] and page.has_more
    assert [b.id for b in client.batches.list(limit=2, after=newest_first[1]).data] == newest_first[2:4]
    last = client.batches.list(limit=2, after=newest_first[3])
    assert [b.id for b in last.data] == newest_first[4:] and not last.has_more
    assert [b.id for b in client.batches.list(limit=2)] == newest_first  # the client follows the cursor
    with pytest.raises(openai.BadRequestError):
        client.batches.list(limit=101)
    files = client.files.list(purpose="batch", limit=2)
    assert len(files.data) == 2 and files.has_more
    assert len(list(client.files.list(purpose="batch", limit=2))) == 5


# ------------------------------------------------------------------------------------ counters
def test_counters_prove_what_was_submitted(server: EmbeddingTestServer) -> None:
    client = client_for(server)
    submit(client, [request_line("a", ["one", "two"]), request_line("b", "three")])
    submit(client, [request_line("c", ["three"]), request_line("a", ["four"])])
    server.advance(0)
    st = server.stats
    assert (st.files_uploaded, st.batches_created) == (2, 2)
    assert (st.batch_requests_submitted, st.batch_inputs_submitted, st.batch_requests_completed) == (4, 5, 4)
    assert st.batch_custom_ids == {"a": 2, "b": 1, "c": 1}
    assert st.batch_text_counts == {"one": 1, "two": 1, "three": 2, "four": 1}
    assert st.batch_duplicates() == {"three": 2}
    assert st.batch_embedded_text_counts == st.batch_text_counts
    assert st.batch_final_statuses == {"completed": 2}
    assert st.requests == 0 and st.text_counts == {}, "batch work is not counted as synchronous requests"
    server.reset_stats()
    assert server.stats.batches_created == 0
