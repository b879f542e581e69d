"""Unit tests: token counting, batch planning, and the client-side rate limiter (fake clock)."""

from __future__ import annotations

import random
import threading
import time

import pytest

from doc_migration.embedding.base import EmbeddingError
from doc_migration.embedding.batching import InputTooLongError, plan_batches
from doc_migration.embedding.ratelimit import RateLimiter, parse_duration, parse_retry_after
from doc_migration.tokens import PIECE_CHARS, count_tokens, encode, get_encoding, truncate_to_tokens


# ------------------------------------------------------------------------------------ tokens
def test_count_tokens_matches_cl100k() -> None:
    assert count_tokens("") == 0
    assert count_tokens("hello world") == 2
    # special-token lookalikes are ordinary text for the embeddings API
    assert count_tokens("<|endoftext|>") == len(get_encoding().encode_ordinary("<|endoftext|>")) > 1
    text = "Dagster partitions embed chunks with pgvector. " * 50
    assert count_tokens(text) == len(get_encoding().encode_ordinary(text))


def test_count_tokens_long_text_is_piecewise_and_close() -> None:
    text = "line of documentation text\n" * 100_000  # 2.7M characters: the wrapper alone refuses it
    assert len(text) > 1_000_000 > PIECE_CHARS
    n = count_tokens(text)
    one_line = count_tokens("line of documentation text\n")
    assert abs(n - one_line * 100_000) <= len(text) // PIECE_CHARS + 1
    assert len(encode(text)) == n


def test_count_tokens_survives_hostile_text() -> None:
    assert count_tokens("a\ud800b") >= 2  # lone surrogate
    assert count_tokens("😀" * 60_000) > 0  # 4-byte characters: many tokens per character
    assert count_tokens("x" * 300_000) > 0  # no whitespace at all: hard cuts


def test_truncate_to_tokens() -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 40
    out = truncate_to_tokens(text, 25)
    assert text.startswith(out)
    assert count_tokens(out) <= 25
    assert count_tokens(out) >= 24
    assert truncate_to_tokens(text, 10_000) == text
    assert truncate_to_tokens(text, 0) == ""
    assert truncate_to_tokens("short", 5) == "short"


def test_truncate_never_splits_a_character() -> None:
    text = "日本語のドキュメント" * 200
    for n in (1, 3, 7, 50):
        out = truncate_to_tokens(text, n)
        assert "\ufffd" not in out
        assert text.startswith(out)
        assert count_tokens(out) <= n


def test_truncate_long_text() -> None:
    text = "word " * 500_000
    out = truncate_to_tokens(text, 8191)
    assert count_tokens(out) == 8191
    assert text.startswith(out)


# ------------------------------------------------------------------------------------ batches
def test_plan_batches_respects_input_limit() -> None:
    batches = plan_batches([1] * 5000)
    assert [len(b) for b in batches] == [2048, 2048, 904]
    assert batches[0] == range(0, 2048) and batches[-1].stop == 5000


def test_plan_batches_respects_token_limit_and_order() -> None:
    counts = [8000] * 100
    batches = plan_batches(counts)
    assert all(sum(counts[i] for i in b) <= 300_000 for b in batches)
    assert [i for b in batches for i in b] == list(range(100))
    assert len(batches) == 3  # 37 + 37 + 26


def test_plan_batches_random_invariants() -> None:
    rnd = random.Random(7)
    for _ in range(50):
        counts = [rnd.randint(0, 8191) for _ in range(rnd.randint(0, 3000))]
        max_inputs, max_tokens = rnd.randint(1, 300), rnd.randint(8191, 100_000)
        batches = plan_batches(counts, max_inputs=max_inputs, max_tokens=max_tokens)
        assert [i for b in batches for i in b] == list(range(len(counts)))
        for b in batches:
            assert len(b) >= 1
            assert len(b) <= max_inputs
            assert sum(counts[b.start : b.stop]) <= max_tokens
        # greedy: a batch is cut only when the next input would not fit
        for b, nxt in zip(batches, batches[1:], strict=False):
            assert len(b) == max_inputs or sum(counts[b.start : b.stop]) + counts[nxt.start] > max_tokens


def test_plan_batches_refuses_too_long_input() -> None:
    with pytest.raises(InputTooLongError) as err:
        plan_batches([10, 8192, 5])
    assert err.value.index == 1 and err.value.tokens == 8192
    assert isinstance(err.value, EmbeddingError) and isinstance(err.value, ValueError)
    assert plan_batches([8191]) == [range(0, 1)]
    assert plan_batches([]) == []
    with pytest.raises(ValueError):
        plan_batches([1], max_inputs=0)


# ------------------------------------------------------------------------------------ headers
@pytest.mark.parametrize(
    ("text", "seconds"),
    [("6m0s", 360.0), ("1s", 1.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("0.5", 0.5), ("59.123s", 59.123),
     ("", None), ("soon", None), (None, None)],
)
def test_parse_duration(text: str | None, seconds: float | None) -> None:
    got = parse_duration(text)
    assert got == pytest.approx(seconds) if seconds is not None else got is None


def test_parse_retry_after_prefers_ms() -> None:
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "3"}) == pytest.approx(0.25)
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412470.0) == pytest.approx(10.0)


# ------------------------------------------------------------------------------------ limiter
class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_limiter_blocks_until_window_frees() -> None:
    clock = FakeClock()
    lim = RateLimiter(tpm=1000, window_seconds=60, headroom=1.0, clock=clock)
    r1, _ = lim.try_acquire(600)
    assert r1 is not None
    r2, wait = lim.try_acquire(600)
    assert r2 is None and wait is None  # only a release can help: r1 is in flight
    clock.t += 5
    lim.release(r1)  # completes at t=1005 -> counts until t=1065
    r2, wait = lim.try_acquire(600)
    assert r2 is None and wait == pytest.approx(60)
    r3, _ = lim.try_acquire(400)  # fits next to it
    assert r3 is not None
    lim.release(r3)
    clock.t += 60
    r2, wait = lim.try_acquire(600)
    assert r2 is not None and wait == 0


def test_limiter_rejected_requests_free_their_budget() -> None:
    clock = FakeClock()
    lim = RateLimiter(tpm=1000, window_seconds=60, headroom=1.0, clock=clock)
    r1, _ = lim.try_acquire(900)
    assert r1 is not None
    lim.release(r1, consumed=False)  # a 429: the server did not count it
    r2, _ = lim.try_acquire(900)
    assert r2 is not None


def test_limiter_rpm_and_headroom() -> None:
    clock = FakeClock()
    lim = RateLimiter(rpm=10, window_seconds=60, headroom=0.9, clock=clock)
    got = []
    for _ in range(12):
        res, _ = lim.try_acquire(1)
        if res is not None:
            lim.release(res)
            got.append(res)
    assert len(got) == 9  # floor(10 * 0.9)


def test_limiter_oversized_request_goes_alone() -> None:
    lim = RateLimiter(tpm=100, headroom=1.0, clock=FakeClock())
    res, _ = lim.try_acquire(500)
    assert res is not None  # would never fit: admitted when the window is empty
    other, _ = lim.try_acquire(1)
    assert other is None


def test_limiter_learns_from_headers() -> None:
    clock = FakeClock()
    lim = RateLimiter(window_seconds=60, headroom=1.0, clock=clock)
    assert lim.tpm is None and lim.max_request_tokens() is None
    res, _ = lim.try_acquire(100)
    assert res is not None
    # The server says 10,000/min and that 6,000 are left: 3,900 were used by someone else.
    lim.update_from_headers({"x-ratelimit-limit-tokens": "10000", "x-ratelimit-remaining-tokens": "6000",
                             "x-ratelimit-reset-tokens": "30s", "x-ratelimit-limit-requests": "100",
                             "x-ratelimit-remaining-requests": "99", "x-ratelimit-reset-requests": "600ms"})
    lim.release(res)
    assert lim.tpm == 10_000 and lim.rpm == 100
    assert lim.snapshot()["external_tokens"] == 3900
    ok, _ = lim.try_acquire(6000)  # 100 mine + 3900 others + 6000 = the whole cap
    assert ok is not None
    lim.release(ok)
    blocked, wait = lim.try_acquire(100)
    assert blocked is None and wait == pytest.approx(30)  # the others' share resets in 30 s
    clock.t += 30
    ok2, _ = lim.try_acquire(100)
    assert ok2 is not None
    # configured caps below the account's stay in force
    lim2 = RateLimiter(tpm=5000, clock=clock)
    lim2.update_from_headers({"x-ratelimit-limit-tokens": "10000", "x-ratelimit-remaining-tokens": "10000"})
    assert lim2.tpm == 5000


def test_limiter_max_request_tokens() -> None:
    assert RateLimiter(tpm=1_000_000, headroom=1.0).max_request_tokens() == 125_000
    assert RateLimiter(tpm=40_000, headroom=1.0).max_request_tokens() == 8191  # one full input must fit
    assert RateLimiter(tpm=5_000, headroom=1.0).max_request_tokens() == 5000


def test_limiter_pause_and_cancel() -> None:
    lim = RateLimiter(tpm=1000)
    lim.pause(0.2)
    start = time.monotonic()
    lim.release(lim.acquire(1))
    assert time.monotonic() - start >= 0.19
    lim = RateLimiter(tpm=1000)
    res = lim.acquire(990)  # more than the 970 budget, but alone: admitted rather than starved
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    start = time.monotonic()
    with pytest.raises(InterruptedError):
        lim.acquire(500, cancel=cancel)
    assert time.monotonic() - start < 1.0
    with pytest.raises(TimeoutError):
        lim.acquire(500, timeout=0.1)
    lim.release(res)


def test_limiter_thread_safety_under_contention() -> None:
    """Many threads acquiring concurrently never exceed the budget in any window."""
    lim = RateLimiter(tpm=2000, window_seconds=0.5, headroom=1.0)
    log: list[tuple[float, int]] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(6):
            res = lim.acquire(100)
            time.sleep(0.005)
            lim.release(res)
            with lock:
                log.append((time.monotonic(), res.tokens))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(log) == 48
    admitted = sorted(log)
    for i, (t0, _) in enumerate(admitted):
        in_window = sum(n for t, n in admitted[i:] if t < t0 + 0.5 - 0.02)
        assert in_window <= 2000


def test_limiter_from_config() -> None:
    lim = RateLimiter.from_config({"tpm": 1000, "rpm": None, "window_seconds": 2})
    assert lim.tpm == 1000 and lim.rpm is None and lim.window_seconds == 2.0
    with pytest.raises(ValueError, match="unknown"):
        RateLimiter.from_config({"tmp": 1000})
