"""`caas serve gateway --workers 2`: one port, two worker processes, each a whole gateway."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psutil

from offchain.platform import auth
from offchain.platform.settings import Settings

REPO = Path(__file__).resolve().parents[3]


def test_serve__two_workers_share_the_port_and_stop_together(
    database_url: str, redis_url: str, free_port, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "LOG_ACCESS": "false",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "offchain.cli",
            "serve",
            "gateway",
            "--port",
            str(port),
            "--workers",
            "2",
            "--state-dir",
            str(tmp_path),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health/live", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, "caas serve exited"
            assert time.monotonic() < deadline, "gateway did not start"
            time.sleep(0.2)
        workers = [
            child
            for child in psutil.Process(process.pid).children()
            if "multiprocessing" in " ".join(child.cmdline())
            and "resource_tracker" not in " ".join(child.cmdline())
        ]
        assert len(workers) == 2
        secret = Settings().auth.jwt_secret.get_secret_value()
        headers = {"Authorization": "Bearer " + auth.issue_token(secret, partner_id=uuid.uuid4())}
        with httpx.Client(base_url=base, headers=headers) as client:
            # answered by whichever worker the kernel picks; each has its own pools
            answers = {client.get(f"/v1/loans/{uuid.uuid4()}").status_code for _ in range(20)}
        assert answers == {404}
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    assert not any(psutil.pid_exists(worker.pid) and worker.status() != "zombie" for worker in workers)
