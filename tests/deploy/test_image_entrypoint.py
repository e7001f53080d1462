"""The CPU image's own start, outside a container: its ENTRYPOINT + CMD run with its ENV (the
addresses moved to 127.0.0.1 and free ports, the data folder to a temporary one), `facegate` being
this checkout's CLI; then its HEALTHCHECK command, as written, must report SERVING, and SIGTERM
must stop the server cleanly."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from deploy_files import ROOT

pytestmark = pytest.mark.slow     # a real server, loading the real models


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def facegate_on_path(tmp_path):
    """A `facegate` command that is this checkout's CLI (as /opt/facegate/bin/facegate is the
    installed one in the image), on PATH ahead of any installed one."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "facegate"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m service.cli "$@"\n')
    shim.chmod(0o755)
    return bin_dir


def test_the_image_entry_point_serves_and_its_health_check_says_serving(images, tmp_path, facegate_on_path):
    image = images["cpu"][-1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEGATE_")}
    # The image's FACEGATE_* settings as they are; every one of them names a field of this
    # checkout's Settings (see test_every_facegate_variable_of_the_images_is_a_setting)
    env.update({k: v for k, v in image.env.items() if k.startswith("FACEGATE_")})
    assert image.env["FACEGATE_DEVICE"] == "cpu"
    listen, health = free_port(), free_port()
    env.update(FACEGATE_LISTEN=f"127.0.0.1:{listen}", FACEGATE_HEALTH_LISTEN=f"127.0.0.1:{health}",
               FACEGATE_DATA_DIR=str(tmp_path / "data"), PYTHONUNBUFFERED=image.env["PYTHONUNBUFFERED"],
               PATH=f"{facegate_on_path}{os.pathsep}{env['PATH']}", PYTHONPATH=str(ROOT))
    work = tmp_path / "home"          # the image's WORKDIR is no checkout: nothing is read from the cwd
    work.mkdir()
    argv = image.entrypoint + image.cmd
    assert argv == ["facegate", "serve"]
    proc = subprocess.Popen(argv, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = []
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            log.append(line)
            if re.search(r"serving on port (\d+)", line):
                break
        else:
            pytest.fail("no 'serving on port' within 180 s")
        assert proc.poll() is None, "".join(log) + proc.stderr.read()
        text = "".join(log)
        assert f"serving on port {listen}" in text and f"on port {health} (--health-listen)" in text
        assert "face models and gates on cpu" in text
        assert (tmp_path / "data").is_dir()

        check = subprocess.run(image.healthcheck, cwd=work, env=env, capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr
        assert "status: SERVING" in check.stdout and f"127.0.0.1:{health}" in check.stdout

        # the service's own port answers too (no TLS here: loopback)
        own = subprocess.run(["facegate", "health", "--server", f"127.0.0.1:{listen}", "--service",
                              "facegate.v1.FaceGate", "--json"], env=env, capture_output=True, text=True, timeout=60)
        assert own.returncode == 0 and '"status": "SERVING"' in own.stdout, own.stdout + own.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert rc == 0, proc.stderr.read()
    # stopped: the health check now fails (exit 2: no answer), as Docker's HEALTHCHECK would see it
    after = subprocess.run(image.healthcheck, cwd=work, env=env, capture_output=True, text=True, timeout=60)
    assert after.returncode == 2 and "UNAVAILABLE" in after.stdout


def test_every_facegate_variable_of_the_images_is_a_setting(images):
    from service.settings import Settings

    for name, stages in images.items():
        for key in stages[-1].env:
            if key.startswith("FACEGATE_"):
                assert key.removeprefix("FACEGATE_").lower() in Settings.model_fields, f"{name}: {key}"
