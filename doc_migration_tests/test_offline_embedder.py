from __future__ import annotations

import numpy as np

from doc_migration.embedding.offline import OfflineEmbedder


def test_vectors_are_deterministic_unit_length_and_sized() -> None:
    a, b = OfflineEmbedder(3072), OfflineEmbedder(3072)
    texts = ["Cilium network policy", "Talos machine configuration", ""]
    va, vb = a.embed(texts), b.embed(texts)
    assert va.shape == (3, 3072) and va.dtype == np.float32
    assert np.array_equal(va, vb)
    assert np.allclose(np.linalg.norm(va, axis=1), 1.0, atol=1e-5)


def test_lexical_overlap_means_higher_similarity() -> None:
    e = OfflineEmbedder(512)
    q, near, far = e.embed(["rust ownership and borrowing", "borrowing rules of rust ownership",
                            "kubernetes ingress controller"])
    assert float(q @ near) > float(q @ far) + 0.3


def test_dimension_follows_configuration() -> None:
    assert OfflineEmbedder(1536).embed(["x"]).shape == (1, 1536)
