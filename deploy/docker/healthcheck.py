"""Docker HEALTHCHECK: GET /health on the port `serve` wrote; healthy when nothing serves (migrate)."""

import sys
import urllib.request
from pathlib import Path

port_file = Path("/tmp/kt-port")
if not port_file.exists():
    sys.exit(0)
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port_file.read_text().strip()}/health", timeout=2) as answer:
        sys.exit(0 if answer.status == 200 else 1)
except Exception:
    sys.exit(1)
