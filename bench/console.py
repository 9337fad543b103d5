"""B12: console page loads against PostgreSQL holding N predictions.

Fills a private database (``CREATE DATABASE freight_console_bench_<random>`` on
127.0.0.1:5432, migrated, dropped at the end) with ``--rows`` predictions in one
``INSERT … SELECT … FROM generate_series``: a day of finished rows (5 % failed) of
three models and three tenants, plus a few hundred queued. Then starts ``freight
api`` on it (admin key from ``FREIGHT_ADMIN_KEY``), signs in with chromium and
loads each page ``--rounds`` times, reading the navigation timing of each load
(``responseEnd`` and ``loadEventEnd``, ms). One JSON line per page.

    .venv/bin/python bench/console.py --rows 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg

from freight.access import new_key
from freight.store import migrate

PG = os.environ.get("FREIGHT_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
PROJECT = Path(__file__).resolve().parent.parent / "tests" / "console_project"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]

FILL = """
INSERT INTO predictions (id, target, status, created_at, kind, priority, queued_at,
    started_at, finished_at, attempts, max_attempts, timeout_s, input_json, output_json,
    error_code, tenant)
SELECT
    lpad(to_hex((1000 * (%(now)s - 86400 + g * 86400.0 / %(rows)s))::bigint), 12, '0')
        || lpad(to_hex(g), 20, '0'),
    (ARRAY['echo', 'gate', 'boom'])[1 + g %% 3],
    CASE WHEN g > %(rows)s - 300 THEN 'queued' WHEN g %% 20 = 0 THEN 'failed'
         ELSE 'succeeded' END,
    %(now)s - 86400 + g * 86400.0 / %(rows)s,
    'model', 0,
    %(now)s - 86400 + g * 86400.0 / %(rows)s,
    CASE WHEN g > %(rows)s - 300 THEN NULL ELSE %(now)s - 86400 + g * 86400.0 / %(rows)s + 0.01 END,
    CASE WHEN g > %(rows)s - 300 THEN NULL ELSE %(now)s - 86400 + g * 86400.0 / %(rows)s + 0.05 END,
    1, 3, 60, '{"i": 1}', '{"i": 1}',
    CASE WHEN g %% 20 = 0 THEN 'model_error' END,
    (ARRAY['acme', 'beta', 'gamma'])[1 + g %% 3]
FROM generate_series(1, %(rows)s) AS g
"""
PAGES = ["/ui", "/ui/predictions", "/ui/predictions?status=failed", "/ui/deliveries", "/ui/usage"]


def fill(url: str, rows: int) -> float:
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(FILL, {"rows": rows, "now": time.time()})
        # ids as UUIDv7 text (the fill wrote 32 hex digits)
        conn.execute(
            "UPDATE predictions SET id = substr(id, 1, 8) || '-' || substr(id, 9, 4) || '-7' "
            "|| substr(id, 14, 3) || '-8' || substr(id, 18, 3) || '-' || substr(id, 21, 12)"
        )
        conn.execute("ANALYZE predictions")
    return time.perf_counter() - started


def measure(base: str, token: str, rounds: int) -> list[dict[str, Any]]:
    from playwright.sync_api import sync_playwright

    out = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page()
        page.goto(base + "/ui/signin")
        page.fill("input[name=key]", token)
        page.click("button[type=submit]")
        page.wait_for_url(base + "/ui")
        for path in PAGES:
            loads = []
            for _ in range(rounds):
                page.goto(base + path)
                timing = page.evaluate(
                    "JSON.stringify(performance.getEntriesByType('navigation')[0])"
                )
                loads.append(httpx.Response(200, content=timing).json())
            response = [t["responseEnd"] - t["requestStart"] for t in loads]
            loaded = [t["loadEventEnd"] - t["startTime"] for t in loads]
            out.append(
                {
                    "page": path,
                    "response_ms_median": round(statistics.median(response), 1),
                    "load_ms_median": round(statistics.median(loaded), 1),
                    "load_ms_max": round(max(loaded), 1),
                }
            )
        browser.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    name = f"freight_console_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = f"{PG}/{name}"
    api = None
    try:
        migrate(url)
        fill_s = fill(url, args.rows)
        token = new_key().token
        port = 18000 + os.getpid() % 1000
        state = tempfile.mkdtemp(prefix="console-bench-")
        env = {
            **os.environ,
            "FREIGHT_DATABASE_URL": url,
            "FREIGHT_STATE_DIR": state,
            "FREIGHT_ADMIN_KEY": token,
            "FREIGHT_LOG_LEVEL": "warning",
        }
        api = subprocess.Popen(
            [sys.executable, "-m", "freight.cli", "api", str(PROJECT), "--port", str(port)],
            env=env,
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        for line in measure(base, token, args.rounds):
            print(
                json.dumps({"bench": "B12", "rows": args.rows, "fill_s": round(fill_s, 1), **line})
            )
    finally:
        if api is not None:
            api.terminate()
            api.wait(30)
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
