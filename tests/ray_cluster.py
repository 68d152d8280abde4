"""Ray clusters that tests start and stop themselves, touching no other Ray on the machine.

`ray stop` ends every Ray process of the user on the machine (a search running beside the tests
included), so no test runs it. Instead each `ray start` here runs in a session of its own
(`start_new_session`): Ray's daemons (GCS, raylet, dashboard, agents, workers) inherit its process
group, and `RayNode.stop` signals that group alone, SIGTERM then SIGKILL, as `ray stop --force`
does to all of them. The head gets a temp dir of its own too, so its session files and
`session_latest` link do not replace those of a cluster the user runs.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).parent / "ray")


def free_ports(n: int, taken: frozenset[int] = frozenset()) -> list[int]:
    """n distinct ports free now, none of them in `taken`. Every socket stays bound until all are
    chosen: the OS cannot hand one port out twice, as it can to one call after another (a node
    given one port for two of its components refuses to start: "Ray component metrics_export is
    trying to use a port number ... that is used by other components", seen under load)."""
    sockets, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket()
            sockets.append(s)
            s.bind(("127.0.0.1", 0))
            if s.getsockname()[1] not in taken:
                ports.append(s.getsockname()[1])
    finally:
        for s in sockets:
            s.close()
    return ports


def free_port() -> int:
    return free_ports(1)[0]


def ray_env(**extra: str) -> dict:
    """The environment of a test's cluster: token auth as `ray start` has it in Ray 2.60, and the
    CLI told so (it sends the token only with RAY_AUTH_MODE=token)."""
    return {**os.environ, "RAY_AUTH_MODE": "token", **extra}


class RayNode:
    """One `ray start ARGS` (head or worker) in a process group of its own.

    wrap: turns the `ray start` command into the one to run (e.g. under `unshare -m sh -c '... && exec
    ray start ...'` for a node in its own mount namespace; it must exec, or fork within the group). After construction `returncode`
    and `stderr` are those of `ray start`; `stop()` is safe to call whatever happened."""

    def __init__(self, args: list[str], env: dict, wrap=None, timeout: float = 180):
        self.temp_dir = None
        # Ports of its own: Ray's defaults (the dashboard agent's 52365, the client server's 10001,
        # the dashboard's 8265) are taken by whichever cluster started first, and a node whose
        # agent cannot bind one never takes a job ("No available agent to submit job").
        given = {a.split("=")[0] for a in args}
        node_ports = ["--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--metrics-export-port",
                      "--runtime-env-agent-port"]
        head_ports = ["--ray-client-server-port", "--dashboard-port"] if "--head" in args else []
        flags = [flag for flag in node_ports + head_ports if flag not in given]
        taken = frozenset(int(p) for a in args for p in re.findall(r"[=:](\d+)$", a))  # --port=, --address=host:port
        args = [*args, *(f"{flag}={port}" for flag, port in zip(flags, free_ports(len(flags), taken)))]
        if "--head" in args:  # worker nodes take the head's session from the GCS
            self.temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths have a limit
            args = [*args, f"--temp-dir={self.temp_dir}"]
        command = [RAY, "start", *args]
        command = wrap(command) if wrap else command
        # Files, not pipes: Ray's daemons inherit the start command's output and keep it open, so a
        # pipe would never reach its end.
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            proc = subprocess.Popen(command, stdout=out, stderr=err, text=True, env=env, start_new_session=True)
            self.group = proc.pid  # a new session: its id is the start command's pid, kept by Ray's daemons
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            out.seek(0), err.seek(0)
            self.stdout, self.stderr = out.read(), err.read()
        self.returncode = proc.returncode

    def pids(self) -> list[int]:
        """The live processes of this node's group (zombies excluded)."""
        found = []
        for p in psutil.process_iter(["pid", "status"]):
            try:
                if os.getpgid(p.pid) == self.group and p.info["status"] != psutil.STATUS_ZOMBIE:
                    found.append(p.pid)
            except (ProcessLookupError, psutil.Error):
                continue
        return found

    def stop(self, grace: float = 3.0) -> None:
        """SIGTERM to the node's group, SIGKILL to what is left after `grace` seconds; waits until
        none of its processes is left (Ray's GCS does not always end on SIGTERM)."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 30.0)):
            try:
                os.killpg(self.group, sig)
            except ProcessLookupError:
                break
            deadline = time.time() + wait
            while self.pids() and time.time() < deadline:
                time.sleep(0.2)
            if not self.pids():
                break
        left = self.pids()
        if self.temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
        assert not left, f"Ray processes of the test's node still alive after SIGKILL: {left}"


def answers(address: str, env: dict, timeout: float = 60) -> bool:
    """Whether the cluster at address (host:port of its GCS) answers `ray status` with its
    resources within `timeout` seconds (a fresh cluster's autoscaler reports after a few)."""
    deadline = time.time() + timeout
    while True:
        try:
            proc = subprocess.run([RAY, "status", f"--address={address}"], capture_output=True, text=True,
                                  timeout=max(5.0, deadline - time.time()), env=env)
            if proc.returncode == 0 and "Resources" in proc.stdout:
                return True
        except subprocess.TimeoutExpired:
            return False
        if time.time() > deadline:
            return False
        time.sleep(1.0)
