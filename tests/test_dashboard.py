"""While a search runs, its Ray dashboard answers on 127.0.0.1 only, and only with the token."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def get(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_dashboard_needs_the_token_and_binds_loopback(tmp_path):
    proc = subprocess.Popen([sys.executable, "scripts/search.py", "spaces/smoke.yaml", "--storage", str(tmp_path),
                             "--max-epochs", "5"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        url = None
        deadline = time.time() + 120
        while url is None and time.time() < deadline:
            line = proc.stdout.readline()
            match = re.search(r"Ray dashboard: (http://[\d.]+:\d+)", line)
            url = match.group(1) if match else None
        assert url and url.startswith("http://127.0.0.1:"), "dashboard URL printed"
        port = int(url.rsplit(":", 1)[1])
        token_path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
        token = os.environ.get("RAY_AUTH_TOKEN") or token_path.read_text().strip()
        assert get(f"{url}/api/version") == 401  # no token
        assert get(f"{url}/api/version", token="wrong") == 403
        assert get(f"{url}/api/version", token=token) == 200
        listening = {c.laddr.ip for c in psutil.net_connections(kind="tcp")
                     if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
        assert listening == {"127.0.0.1"}
        # the Actors page names the trial each worker runs
        def trial_workers() -> list[dict]:
            request = urllib.request.Request(f"{url}/api/v0/actors?detail=true&limit=100&timeout=60",
                                             headers={"Authorization": f"Bearer {token}"})
            try:
                with urllib.request.urlopen(request, timeout=70) as response:
                    actors = json.loads(response.read())["data"]["result"]["result"]
            except urllib.error.HTTPError as err:  # the state API answers 500 while it starts
                print(f"actors: HTTP {err.code}: {err.read()[:300]!r}")
                return []
            return [a for a in actors if a.get("class_name") == "TrialWorker" and a.get("repr_name")]

        workers = []
        wait = time.time() + 240
        while not workers and time.time() < wait:
            workers = trial_workers()
            time.sleep(0.5)
        assert workers and all(re.fullmatch(r"trial_[0-9a-f]{8}", a["repr_name"]) for a in workers), workers
        wait = time.time() + 240
        while not (tmp_path / "smoke" / "trials.csv").is_file() and time.time() < wait:
            time.sleep(0.5)  # the user watches trials come in, then presses Ctrl-C
        trial_ids = {d.name.removeprefix("trial_") for d in (tmp_path / "smoke").glob("trial_*")}
        assert {a["repr_name"].removeprefix("trial_") for a in workers} <= trial_ids
        proc.send_signal(signal.SIGINT)  # a clean stop that says how to resume
        output = proc.communicate(timeout=300)[0]
        assert proc.returncode == 130, output[-3000:]
        assert "--resume" in output and "Traceback" not in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
