"""Unit tests of the validation building blocks that need no database: SimHash, link extraction,
configuration, the HTML page."""

from __future__ import annotations

import random
from html.parser import HTMLParser
from typing import Any

import numpy as np
import pytest

from doc_migration.config import ConfigError
from doc_migration.validation.config import BASE_REQUIRED, parse_validation_config
from doc_migration.validation.duplicates import near_pairs, popcount, simhash
from doc_migration.validation.html import render_html
from doc_migration.validation.links import _candidates, _split_target, extract_links

TEXT = ("Cilium uses eBPF programs attached to network interfaces to enforce network policies, "
        "balance load between services and observe every flow through Hubble without sidecars or "
        "iptables rules, which keeps latency low even for clusters with thousands of nodes and pods. "
        "Policies select endpoints by labels rather than addresses, so a rolling upgrade that replaces "
        "every pod keeps the same rules in force; identities are allocated per label set and shared "
        "through the key-value store or custom resources, depending on the chosen identity mode. "
        "Hubble exports flow logs with verdicts, so an operator sees which policy dropped a packet and "
        "why, then adjusts the rule and watches the next connection succeed within seconds. Egress "
        "gateways give outbound traffic a stable source address for firewalls outside the cluster, "
        "while transparent encryption with WireGuard or IPsec protects traffic between nodes.")


def test_simhash_near_duplicates_are_close_and_unrelated_texts_far() -> None:
    a = simhash(TEXT)
    c = simhash("Rust ownership rules: each value has one owner, borrows are checked at compile time, "
                "and lifetimes describe how long references stay valid across function boundaries and loops.")
    assert a is not None and c is not None
    assert bin(a ^ c).count("1") > 10
    assert simhash("too short to fingerprint") is None
    assert simhash(TEXT) == a  # deterministic (no Python hash randomisation)
    # Chunk-sized texts (500 words) with one word changed: SimHash is a vote over shingles, so most such
    # copies land within the default 3 bits; unrelated texts land ~32 bits apart.
    rng = random.Random(1)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))) for _ in range(3000)]
    near, far = [], []
    for _ in range(50):
        words = [rng.choice(vocab) for _ in range(500)]
        edited = list(words)
        edited[rng.randrange(len(words))] = "changed"
        other = [rng.choice(vocab) for _ in range(500)]
        x, y, z = simhash(" ".join(words)), simhash(" ".join(edited)), simhash(" ".join(other))
        assert x is not None and y is not None and z is not None
        near.append(bin(x ^ y).count("1"))
        far.append(bin(x ^ z).count("1"))
    assert sum(d <= 3 for d in near) >= 35 and max(near) <= 8
    assert min(far) > 12


def test_near_pairs_finds_exactly_the_pairs_brute_force_finds() -> None:
    rng = random.Random(7)
    fps = [rng.getrandbits(64) for _ in range(400)]
    for i in range(0, 60, 3):  # plant pairs 0..3 bits apart
        flip = sum(1 << b for b in rng.sample(range(64), i % 4))
        fps.append(fps[i] ^ flip)
    got = {(i, j) for i, j, _ in near_pairs(fps, 3)}
    arr = np.array(fps, dtype=np.uint64)
    brute = {(i, j) for i in range(len(fps)) for j in range(i + 1, len(fps))
             if int(popcount(np.array([arr[i] ^ arr[j]], dtype=np.uint64))[0]) <= 3}
    assert got == brute and len(brute) >= 20


def test_markdown_links_skip_code_images_and_keep_reference_definitions() -> None:
    text = ("# Title\n\nSee [the guide](../guide/setup.md#install) and ![logo](img/logo.png).\n\n"
            "```md\n[not a link](ignored.md)\n```\n\nInline `[x](code.md)` too.\n\n[ref]: other/page.mdx\n"
            "<a href=\"raw.html\">raw</a>\n")
    links = extract_links(text, "markdown")
    assert [(t, k) for _, t, k in links] == [("../guide/setup.md#install", "markdown"), ("other/page.mdx", "markdown"),
                                            ("raw.html", "html")]
    assert links[0][0] == 3


def test_rst_links_take_doc_roles_and_paths_not_named_references() -> None:
    text = ("Intro\n=====\n\nRead :doc:`policy` and :doc:`the guide </operations/upgrade>`.\n"
            "Also `the spec <../spec.rst>`_ but not `Cilium <cilium_>`_ nor `site <https://x.io>`_.\n")
    links = [(t, k) for _, t, k in extract_links(text, "rst")]
    assert ("policy", "doc") in links and ("/operations/upgrade", "doc") in links
    assert ("../spec.rst", "rst") in links and ("https://x.io", "rst") in links
    assert not any(t.endswith("_") for t, _ in links)
    assert _split_target("https://x.io") is None and _split_target("#anchor") is None
    assert _split_target("a%20b.md#x") == "a b.md"


def test_absolute_targets_resolve_against_each_ancestor_folder() -> None:
    cands = _candidates("/r/docs/guide", "/r", "/ops/up.md", ())
    assert cands == ["/r/docs/guide/ops/up.md", "/r/docs/ops/up.md", "/r/ops/up.md"]
    assert "/r/docs/x.md" in _candidates("/r/docs/guide", "/r", "../x", (".md",))


def test_validation_config_parses_and_rejects_typos() -> None:
    cfg = parse_validation_config({
        "validation": {"duplicates": {"strategy": "drop", "simhash_bits": 5}, "orphans": {"severity": "error"},
                       "retrieval": {"per_partition": 3, "min_recall_at_1": 0.95}},
        "doc_types": {"rust": {"required_metadata": {"category": "string", "tags": "list[str]"}}}})
    assert cfg.duplicates.strategy == "drop" and cfg.duplicates.simhash_bits == 5
    assert cfg.orphans_severity == "ERROR" and cfg.retrieval_per_partition == 3
    assert cfg.required_for("rust") == {**BASE_REQUIRED, "category": "str", "tags": "list[str]"}
    assert cfg.required_for("talos") == BASE_REQUIRED
    cases: list[tuple[dict[str, Any], str]] = [
        ({"validation": {"duplicates": {"strategy": "merge"}}}, "strategy"),
        ({"validation": {"retrival": {}}}, "unknown key"),
        ({"validation": {"retrieval": {"min_recall_at_1": 2}}}, "between"),
        ({"doc_types": {"rust": {"required_metadata": {"x": "uuid"}}}}, "unknown type"),
    ]
    for bad, words in cases:
        with pytest.raises(ConfigError, match=words):
            parse_validation_config(bad)


class _Collect(HTMLParser):
    """Text of every element with an id, plus every tag and attribute seen."""

    def __init__(self) -> None:
        super().__init__()
        self.by_id: dict[str, str] = {}
        self.stack: list[str | None] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag not in ("meta", "br", "hr", "img", "input", "link", "rect"):
            self.stack.append(a.get("id"))
            if a.get("id"):
                self.by_id[str(a["id"])] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag not in ("meta", "br", "hr", "img", "input", "link", "rect") and self.stack:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        for element_id in self.stack:
            if element_id:
                self.by_id[element_id] += data


def parse_html(page: str) -> _Collect:
    parser = _Collect()
    parser.feed(page)
    return parser


def synthetic_report() -> dict[str, Any]:
    return {
        "run_id": "run-1", "passed": False, "errors": ["checksums"], "warnings": ["links"], "generated_at": "now",
        "seconds": 1.5,
        "checks": {
            "checksums": {"passed": False, "severity": "ERROR", "message": "1 row changed <b>since</b> load",
                          "findings": [{"doc_path": "a.md", "partition": "rust-00"}], "total_findings": 1,
                          "seconds": 0.1},
            "links": {"passed": False, "severity": "WARN", "message": "2 dangling", "findings": [], "total_findings": 2,
                      "seconds": 0.2},
            "counts": {"passed": True, "severity": "ERROR", "message": "ok", "findings": [], "total_findings": 0,
                       "seconds": 0.0},
        },
        "totals": {"rows": 12345, "documents_loaded": 678, "quarantined": 9, "checks_passed": 1, "checks_failed": 2,
                   "recall_at_1": 0.995, "partitions": 8},
        "per_doc_type": [{"doc_type": "rust", "partitions": 4, "rows": 12000, "documents": 600, "files": 600,
                          "quarantined": 9, "failures": 3, "failed_checks": ["checksums", "links"]},
                         {"doc_type": "talos", "partitions": 4, "rows": 345, "documents": 78, "files": 70,
                          "quarantined": 0, "failures": 0, "failed_checks": []}],
        "throughput": {"runs": [{"run_id": "abcdef0123", "partitions": 8, "rows_written": 12345, "seconds": 10.0,
                                 "rows_per_second": 1234.5, "committed_at": "now"}]},
        "quarantined": [{"doc_type": "rust", "path": "bad.md", "reason": "empty <file>", "hint": ""}],
    }


def test_html_is_one_self_contained_page_with_the_key_numbers() -> None:
    page = render_html(synthetic_report())
    html = parse_html(page)
    assert html.by_id["total-rows"] == "12,345"
    assert html.by_id["total-documents"] == "678"
    assert html.by_id["total-quarantined"] == "9"
    assert html.by_id["checks-passed"] == "1" and html.by_id["checks-failed"] == "2"
    assert html.by_id["overall-status"] == "FAILED"
    assert html.by_id["recall-at-1"] == "0.9950"
    assert {"chart-rows", "chart-failures", "chart-quarantined", "chart-throughput"} <= set(html.by_id)
    assert "<b>since</b>" not in page and "&lt;b&gt;since&lt;/b&gt;" in page  # messages are escaped
    tags = [t for t, _ in html.tags]
    assert "script" not in tags and "link" not in tags and "img" not in tags and tags.count("svg") == 4
    for _, attrs in html.tags:  # nothing is fetched
        for name in ("src", "href", "xlink:href"):
            assert not (attrs.get(name) or "").startswith(("http", "//")), attrs
    assert "@import" not in page and "url(" not in page


def test_unindexed_retrieval_sample_is_thinned_evenly_and_never_invented() -> None:
    from doc_migration.validation.retrieval import EXACT_BUDGET, _thin

    assert _thin(0, 10) == []  # nothing sampled (nothing loaded with the model): nothing to rank
    assert _thin(5, 100) == [0, 1, 2, 3, 4]  # within budget: the whole sample
    kept = _thin(440, EXACT_BUDGET // 100)
    assert len(kept) == 100 and kept[0] == 0 and kept[-1] >= 435  # spread over every partition's samples
    assert _thin(3, EXACT_BUDGET * 10) == [0]  # a huge table still checks one row
