"""Ask a worker's `/healthz` or `/readyz` (observability/readiness.py) from the command line.

    python -m mintsaga.observability.probe healthz   # or readyz; exits 0 on 200, 1 otherwise

It asks 127.0.0.1:$METRICS_PORT (9464 when unset): the worker in the same container, which is
what the image's HEALTHCHECK runs. Standard library only, so a probe costs no heavy imports.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_METRICS_PORT = 9464
TIMEOUT_S = 8.0  # above the endpoints' own bounds (5 s for the event loop, 3 s per check)
PATHS = ("healthz", "readyz")


def probe(path: str, port: int, *, host: str = "127.0.0.1") -> tuple[int, str]:
    """GET `path` from the worker's metrics port: (status, body), or (0, why) unreachable."""
    url = f"http://{host}:{port}/{path.strip('/')}"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as answer:
            return answer.status, answer.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(getattr(exc, "reason", exc))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = (args[0] if args else "healthz").strip("/")
    if len(args) > 1 or path not in PATHS:
        print("usage: python -m mintsaga.observability.probe [healthz|readyz]", file=sys.stderr)
        return 2
    raw = os.environ.get("METRICS_PORT", "").strip() or str(DEFAULT_METRICS_PORT)
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        print(f"METRICS_PORT: {raw!r} is not a port", file=sys.stderr)
        return 2
    status, body = probe(path, int(raw))
    print(f"{status or 'unreachable:'} {body}".strip())
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
