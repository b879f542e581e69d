"""Measure TPM utilisation of a real migration against the test server with a TPM cap.

    python -m testkit.measure_tpm --sources examples/shared-real-formats.yaml --tpm 400000

Starts the OpenAI-compatible test server in-process (60 s window, like OpenAI), runs
``doc-migrate full`` against a fresh database with the openai embedder capped at that TPM, and
prints the server's view: tokens per full window, utilisation, 429s, biggest request.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from doc_migration.storage.embedded_pg import embedded_database_url

from .embedding_server import EmbeddingTestServer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", required=True)
    parser.add_argument("--tpm", type=int, default=400_000)
    parser.add_argument("--window-seconds", type=float, default=60.0)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="doc_migration_tpm_"))
    home.chmod(0o755)
    url = embedded_database_url(home)
    with EmbeddingTestServer(tpm=args.tpm, window_seconds=args.window_seconds, record_texts=True) as server:
        env = {**os.environ, "DATABASE_URL": url, "DOC_MIGRATION_HOME": str(home), "DAGSTER_HOME": "",
               "DOC_MIGRATION_EMBEDDER": "openai", "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "test",
               "DOC_MIGRATION_OPENAI_TPM": str(args.tpm)}
        start = time.time()
        proc = subprocess.run([sys.executable, "-m", "doc_migration.cli", "--sources", args.sources, "full",
                               "--json"], env=env, capture_output=True, text=True)
        elapsed = time.time() - start
        summary = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {}
        windows = server.stats.tokens_per_window(args.window_seconds)
        full = windows[:-1]  # the last window is partial
        report = {
            "exit_code": proc.returncode,
            "seconds": round(elapsed, 1),
            "tpm_cap": args.tpm,
            "tokens_sent": server.stats.tokens,
            "chunks_embedded": summary.get("chunks_embedded"),
            "tokens_per_window": windows,
            "utilisation_full_windows": [round(w / args.tpm, 3) for w in full],
            "max_tokens_in_rolling_window": server.stats.max_tokens_in_window(args.window_seconds),
            "rate_limited_429": server.stats.rate_limited,
            "max_inputs_per_request": server.stats.max_inputs_per_request,
            "max_tokens_per_request": server.stats.max_tokens_per_request,
            "texts_embedded_twice": len(server.stats.duplicates()),
            "status_counts": dict(server.stats.status_counts),
            "client_retries": summary.get("embedding_retries"),
            "inputs_received": server.stats.inputs,
        }
    print(json.dumps(report, indent=2))
    return 0 if proc.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
