"""`helm test`: the exporter answers /healthz and serves its metrics on /metrics.

Runs in the exporter's own image (no other image to pull), against EXPORTER_URL; the chart's
tests run this same file against a real `serve`.
"""

import os
import sys
import urllib.request

BASE = os.environ["EXPORTER_URL"].rstrip("/")
CHECKS = (
    ("/healthz", None),
    ("/metrics", "inngest_cancellation_exporter_build_info"),
)


def main() -> int:
    failures = 0
    for path, expected in CHECKS:
        try:
            with urllib.request.urlopen(BASE + path, timeout=10) as answer:
                status, body = answer.status, answer.read().decode("utf-8", "replace")
        except OSError as err:  # refused, timed out, or an HTTP error status
            print(f"FAIL {path}: {err}")
            failures += 1
            continue
        if status != 200 or (expected is not None and expected not in body):
            print(f"FAIL {path}: status {status}" + (f", no {expected}" if expected else ""))
            failures += 1
        else:
            print(f"ok   {path}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
