"""API benchmark: widget-config and token-refresh paths beside a bare aiohttp handler.

Starts real PostgreSQL and Redis (tests/services.py), the API as `python -m runtime.api`, and
a bare aiohttp server answering a fixed JSON body, each in its own process; the load comes
from yet another process. Every path runs for the same time at the same concurrency, in the
same run, so the ratio to the bare handler is the figure (absolute numbers on a shared
machine are noise). Prints a table and writes JSON.

    .venv/bin/python bench/api.py [--seconds 8] [--concurrency 32] [--json bench/results/api.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from runtime.common.keyring import new_keyring
from tests.services import free_port, postgres_server, redis_server, wait_for_port

PASSWORD = "bench password 123"  # noqa: S105 - a throwaway account in a throwaway database
ORIGIN = "https://shop.example"
BARE_BODY = {
    "public_id": "agt_x",
    "name": "Desk",
    "greeting": "Hi",
    "voice": "Puck",
    "language": "en-US",
}


# --- the bare baseline server (its own process) ------------------------------------------


def serve_bare(port: int) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(BARE_BODY)

    app = web.Application()
    app.router.add_get("/bare", handler)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# --- the load generator (its own process) --------------------------------------------------


async def _load(spec: dict[str, Any]) -> dict[str, Any]:
    url, mode = spec["url"], spec["mode"]
    deadline = time.monotonic() + spec["seconds"]
    latencies: list[float] = []
    errors = 0
    tokens: list[str] = list(spec.get("refresh_tokens", []))

    async def worker(index: int, session: aiohttp.ClientSession) -> None:
        nonlocal errors
        token = tokens[index] if tokens else ""
        while time.monotonic() < deadline:
            started = time.perf_counter()
            if mode == "refresh":
                async with session.post(url, json={"refresh_token": token}) as resp:
                    body = await resp.json()
                    ok = resp.status == 200
                    if ok:
                        token = body["refresh_token"]
            else:
                async with session.get(url, headers={"Origin": ORIGIN}) as resp:
                    await resp.read()
                    ok = resp.status == 200
            latencies.append(time.perf_counter() - started)
            if not ok:
                errors += 1
                if mode == "refresh":
                    return  # the chain is broken; this worker stops

    connector = aiohttp.TCPConnector(limit=spec["concurrency"])
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.monotonic()
        await asyncio.gather(*(worker(i, session) for i in range(spec["concurrency"])))
        elapsed = time.monotonic() - started
    return {
        "requests": len(latencies),
        "errors": errors,
        "elapsed": elapsed,
        "latencies": latencies,
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_load(spec: dict[str, Any], server_pid: int) -> dict[str, Any]:
    """Run the load in a separate process; returns its measurements, with the CPU time the
    server process spent per request (steadier than latency on a shared machine)."""
    cpu_before = cpu_seconds(server_pid)
    result = subprocess.run(
        [sys.executable, __file__, "--load"],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        timeout=spec["seconds"] + 60,
        check=True,
    )
    server_cpu = cpu_seconds(server_pid) - cpu_before
    raw = json.loads(result.stdout)
    latencies = sorted(raw["latencies"])
    if not latencies:
        raise RuntimeError(f"no requests completed for {spec['url']}")

    def pct(p: float) -> float:
        return float(latencies[min(len(latencies) - 1, int(p * len(latencies)))]) * 1000

    return {
        "requests": raw["requests"],
        "errors": raw["errors"],
        "rps": raw["requests"] / raw["elapsed"],
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "mean_ms": statistics.fmean(latencies) * 1000,
        "server_cpu_ms_per_request": server_cpu * 1000 / raw["requests"],
    }


# --- orchestration -------------------------------------------------------------------------


def _post(url: str, payload: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    async def go() -> Any:
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, json=payload, headers=headers) as resp,
        ):
            if resp.status >= 300:
                raise RuntimeError(f"POST {url}: HTTP {resp.status}: {await resp.text()}")
            return await resp.json()

    return asyncio.run(go())


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen(
        [sys.executable, *args], cwd=REPO, env=env, stdout=handle, stderr=handle
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "api.json")
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bare", type=int, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.load:
        print(json.dumps(asyncio.run(_load(json.loads(sys.stdin.read())))))
        return 0
    if options.bare:
        serve_bare(options.bare)
        return 0

    work = Path(tempfile.mkdtemp(prefix="orbis-bench-"))
    keys_file = work / "jwt_keys.json"
    keys_file.write_text(new_keyring().dumps())
    token_file = work / "internal_token"
    token_file.write_text("bench-internal-token\n")
    processes: list[subprocess.Popen[bytes]] = []
    with postgres_server() as pg, redis_server() as redis:
        database = pg.create_database()
        api_port, bare_port = free_port(), free_port()
        env = {
            "PATH": os.environ["PATH"],
            "ORBIS_DATABASE_URL": pg.url(database),
            "ORBIS_REDIS_URL": redis.url(0),
            "ORBIS_JWT_KEYS_FILE": str(keys_file),
            "ORBIS_INTERNAL_TOKEN_FILE": str(token_file),
            "ORBIS_PUBLIC_URL": "https://voice.bench",
            "ORBIS_API_PORT": str(api_port),
            "ORBIS_LOG_LEVEL": "warning",
            "ORBIS_RATE_LIMIT_PUBLIC_PER_MINUTE": "100000000",
            "ORBIS_RATE_LIMIT_AUTHENTICATED_PER_MINUTE": "100000000",
            "ORBIS_RATE_LIMIT_LOGIN_PER_MINUTE": "100000000",
        }
        migrate = subprocess.run(
            [sys.executable, "-m", "runtime.api", "migrate"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if migrate.returncode != 0:
            print(migrate.stderr, file=sys.stderr)
            return 1
        try:
            api_process = _start(["-m", "runtime.api"], env, work / "api.log")
            bare_process = _start([__file__, "--bare", str(bare_port)], env, work / "bare.log")
            processes += [api_process, bare_process]
            wait_for_port(api_port)
            wait_for_port(bare_port)
            api = f"http://127.0.0.1:{api_port}"
            signup = _post(
                api + "/api/v1/auth/signup",
                {"org_name": "Bench", "email": "bench@example.com", "password": PASSWORD},
            )
            auth = {"Authorization": f"Bearer {signup['access_token']}"}
            agent = _post(
                api + "/api/v1/agents",
                {"name": "Desk", "instructions": "Help.", "allowed_origins": [ORIGIN]},
                auth,
            )
            # One refresh-token family per worker: each worker follows its own chain.
            refresh_tokens = [
                _post(
                    api + "/api/v1/auth/login", {"email": "bench@example.com", "password": PASSWORD}
                )["refresh_token"]
                for _ in range(options.concurrency)
            ]
            common = {"seconds": options.seconds, "concurrency": options.concurrency}
            results = {
                "bare aiohttp handler": run_load(
                    {**common, "url": f"http://127.0.0.1:{bare_port}/bare", "mode": "get"},
                    bare_process.pid,
                ),
                "GET widget config": run_load(
                    {
                        **common,
                        "url": f"{api}/api/v1/widget/agents/{agent['public_id']}",
                        "mode": "get",
                    },
                    api_process.pid,
                ),
                "POST token refresh": run_load(
                    {
                        **common,
                        "url": f"{api}/api/v1/auth/refresh",
                        "mode": "refresh",
                        "refresh_tokens": refresh_tokens,
                    },
                    api_process.pid,
                ),
            }
        finally:
            for process in processes:
                process.terminate()
                process.wait(timeout=20)
    baseline = results["bare aiohttp handler"]
    print(
        f"\nconcurrency {options.concurrency}, {options.seconds:g} s per path, "
        f"1 API process, loopback\n"
    )
    header = (
        f"{'path':<22}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
        f"{'errors':>8}{'rps vs bare':>13}{'CPU ms/req':>12}"
    )
    print(header)
    print("-" * len(header))
    for name, row in results.items():
        ratio = row["rps"] / baseline["rps"]
        row["rps_ratio_to_bare"] = ratio
        print(
            f"{name:<22}{row['rps']:>9.0f}{row['p50_ms']:>9.2f}{row['p95_ms']:>9.2f}"
            f"{row['p99_ms']:>9.2f}{row['errors']:>8}{ratio:>13.2f}"
            f"{row['server_cpu_ms_per_request']:>12.2f}"
        )
    options.json.parent.mkdir(parents=True, exist_ok=True)
    options.json.write_text(
        json.dumps(
            {
                "concurrency": options.concurrency,
                "seconds": options.seconds,
                "cpu_count": os.cpu_count(),
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwritten: {options.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
