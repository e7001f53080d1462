"""A real `facegate serve` for the benches: a subprocess on a free loopback port."""
from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start_server(data_dir: Path, log: Path | None = None, timeout: float = 180) -> tuple[subprocess.Popen, str]:
    """Start serving `data_dir` on 127.0.0.1:0 -> (the process, its address) once it listens.
    Its log is read on (into `log`, or dropped) so that a full pipe never blocks it."""
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--listen", "127.0.0.1:0",
                             "--data-dir", str(data_dir)], cwd=ROOT, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        m = re.search(r"serving on port (\d+)", line)
        if m:
            threading.Thread(target=_drain, args=(proc, log), daemon=True).start()
            return proc, f"127.0.0.1:{m.group(1)}"
    proc.kill()
    raise RuntimeError(f"the server did not start on {data_dir}")


def _drain(proc: subprocess.Popen, log: Path | None):
    if log is None:
        for _ in proc.stderr:
            pass
        return
    with open(log, "a") as f:
        for line in proc.stderr:
            f.write(line)
