"""Ray's start, overlapped with the driver's imports.

A local `ray.init` takes ~3 s here, mostly waiting: for its dashboard to publish its address
(ray/_private/services.py: start_api_server polls every 0.1 s) and for the raylet to register
(ray/_private/state.py: get_node). The driver's imports of Ray Tune, Optuna, torch and the search
code take ~1 s more. `start_ray_while_importing` runs the imports on a helper thread while the main
thread starts Ray (bench/search_efficiency.py's timeline shows both).

Ray is started from the main thread on purpose: ray.init installs its SIGTERM handler only there,
and the local Ray's processes are tied to the thread that started them (Linux's parent-death
signal fires when that thread ends), so a helper thread that started Ray could not end first.
Only `ray` itself is imported by this module.
"""

from __future__ import annotations

import importlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RayStarted:
    """Wall-clock times: `started` when Ray's start began, `ready` when ray.init returned."""

    started: float
    ready: float


def start_ray(address: str | None, dashboard_host: str = "127.0.0.1", num_gpus: int | None = None) -> RayStarted:
    """Join a cluster (`address`, or RAY_ADDRESS) or start a local Ray with its dashboard, whose
    address is printed with how to log in (token authentication is on by default in Ray 2.60)."""
    import ray

    started = time.time()
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        context = ray.init(address=address, log_to_driver=True)
    else:
        context = ray.init(include_dashboard=True, dashboard_host=dashboard_host, num_gpus=num_gpus,
                           log_to_driver=True)
    ready = time.time()
    if context.dashboard_url:
        token_file = os.environ.get("RAY_AUTH_TOKEN_PATH", str(Path.home() / ".ray" / "auth_token"))
        print(f"Ray dashboard: http://{context.dashboard_url}  (token authentication: paste the token printed "
              f"by `ray get-auth-token`, stored in {token_file})", flush=True)
    return RayStarted(started, ready)


def start_ray_while_importing(module: str, address: str | None, dashboard_host: str = "127.0.0.1",
                              num_gpus: int | None = None):
    """(RayStarted, the imported module): `module` imported on a helper thread while Ray starts.
    An import error is raised after Ray has started (the caller's ray.shutdown stops it)."""
    with ThreadPoolExecutor(1, thread_name_prefix="import") as pool:
        importing = pool.submit(importlib.import_module, module)
        started = start_ray(address, dashboard_host, num_gpus)
        return started, importing.result()
