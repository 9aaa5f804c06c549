"""API benchmark: widget-config, GET /me and token-refresh paths beside a bare aiohttp handler.

GET /me runs twice: with a current access token (the per-request deny-list lookup in Redis)
and with the same user's token minted without `jti`/`fam` (no lookup), so the difference of
the two rows is the revocation check's cost.

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
import jwt
import redis.asyncio as aioredis
from aiohttp import web

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from runtime.api.revocation import Revocations
from runtime.common.keyring import KeyRing, new_keyring
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
    headers = {"Origin": ORIGIN, **spec.get("headers", {})}

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
                async with session.get(url, headers=headers) as resp:
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


def measure_revocation_check(redis_url: str, count: int = 5000) -> dict[str, float]:
    """The deny-list check alone, as the API calls it (runtime.api.revocation), `count` times
    in a row on one connection: wall time per check and this process's CPU per check (what
    the API process pays; Redis's own work is in another process)."""

    async def go() -> dict[str, float]:
        client = aioredis.Redis.from_url(redis_url)
        try:
            revocations = Revocations(client, access_token_seconds=900)
            for _ in range(200):  # connect, warm up
                await revocations.is_revoked(jti="warm", family_id="warm")
            walls = []
            cpu_before = time.process_time()
            for index in range(count):
                started = time.perf_counter()
                await revocations.is_revoked(jti=f"j{index}", family_id="f")
                walls.append(time.perf_counter() - started)
            cpu = time.process_time() - cpu_before
        finally:
            await client.aclose()
        walls.sort()
        return {
            "checks": count,
            "wall_p50_us": walls[len(walls) // 2] * 1e6,
            "wall_p99_us": walls[int(len(walls) * 0.99)] * 1e6,
            "cpu_us_per_check": cpu / count * 1e6,
        }

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
            # The same user's token as issued before tokens carried a jti and a session id:
            # the API skips the deny-list lookup for it, so the two GET /me rows differ by
            # exactly that Redis round trip (runtime/api/revocation.py).
            claims = jwt.decode(
                signup["access_token"], options={"verify_signature": False}, algorithms=["HS256"]
            )
            key = KeyRing.load(keys_file).signing_key
            legacy = {k: v for k, v in claims.items() if k not in ("jti", "fam")}
            legacy["exp"] = int(time.time()) + 3600
            legacy_auth = {
                "Authorization": "Bearer "
                + jwt.encode(legacy, key.secret, algorithm="HS256", headers={"kid": key.kid})
            }
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
                # A B B A: a neighbour's load that drifts during the run weighs on both alike.
                **{
                    f"GET /me, {label} ({round_})": run_load(
                        {**common, "url": f"{api}/api/v1/me", "mode": "get", "headers": headers},
                        api_process.pid,
                    )
                    for round_, label, headers in (
                        (1, "no deny-list", legacy_auth),
                        (1, "deny-list", auth),
                        (2, "deny-list", auth),
                        (2, "no deny-list", legacy_auth),
                    )
                },
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
            revocation_check = measure_revocation_check(redis.url(0))
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
        f"{'path':<28}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
        f"{'errors':>8}{'rps vs bare':>13}{'CPU ms/req':>12}"
    )
    print(header)
    print("-" * len(header))
    for name, row in results.items():
        ratio = row["rps"] / baseline["rps"]
        row["rps_ratio_to_bare"] = ratio
        print(
            f"{name:<28}{row['rps']:>9.0f}{row['p50_ms']:>9.2f}{row['p95_ms']:>9.2f}"
            f"{row['p99_ms']:>9.2f}{row['errors']:>8}{ratio:>13.2f}"
            f"{row['server_cpu_ms_per_request']:>12.2f}"
        )
    print("\naccess-token deny-list check (one Redis MGET per request), GET /me with vs without:")
    for round_ in (1, 2):
        checked = results[f"GET /me, deny-list ({round_})"]
        unchecked = results[f"GET /me, no deny-list ({round_})"]
        cpu = checked["server_cpu_ms_per_request"] - unchecked["server_cpu_ms_per_request"]
        print(
            f"  round {round_}: req/s x{checked['rps'] / unchecked['rps']:.3f}, "
            f"p50 {checked['p50_ms'] - unchecked['p50_ms']:+.2f} ms, "
            f"server CPU {cpu:+.3f} ms/request"
        )
    me = results["GET /me, no deny-list (1)"]
    print(
        f"  the check alone, {revocation_check['checks']:.0f} in a row: wall p50 "
        f"{revocation_check['wall_p50_us']:.0f} us, p99 {revocation_check['wall_p99_us']:.0f} us; "
        f"API-side CPU {revocation_check['cpu_us_per_check']:.0f} us per check = "
        f"{revocation_check['cpu_us_per_check'] / 10 / me['server_cpu_ms_per_request']:.1f} % "
        "of GET /me's server CPU per request"
    )
    options.json.parent.mkdir(parents=True, exist_ok=True)
    options.json.write_text(
        json.dumps(
            {
                "concurrency": options.concurrency,
                "seconds": options.seconds,
                "cpu_count": os.cpu_count(),
                "results": results,
                "revocation_check": revocation_check,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwritten: {options.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
