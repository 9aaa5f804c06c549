"""Gateway benchmark: N simulated callers streaming real-time audio through the gateway.

Starts real PostgreSQL and Redis (tests/services.py), the API (in this process: it only
serves call starts, transcripts and call ends), `--emulators` Gemini Live emulator processes
sharing one port (SO_REUSEPORT: the kernel spreads sessions over them; replies paced in real
time), and two relays in their own processes, loaded at the same time with the same load:

- **bare relay**: a minimal aiohttp WebSocket relay (raw JSON to the emulator, no SDK, no
  limits, no transcripts, no Redis), the floor any relay pays;
- **gateway**: `python -m runtime.gateway`, the real thing.

Each caller connects, waits for `session.started`, then streams 16 kHz PCM16 in real time
(speech, then silence; the emulator's VAD ends the turn after 500 ms of silence) for the whole
run, and receives the model's 24 kHz audio. Per turn it measures the response latency: from
sending the frame that completes the 500 ms of silence to the first byte of model audio, for
turns begun once every call of the load process is up (steady state, not the ramp). The
gateway's *added* latency is its latency minus the bare relay's in the same run (both include
the emulator's own processing). CPU is the relay process's user+system time over the run;
the rig's own CPU (emulators, load processes) and the host's are reported beside it, so a run
where the rig or the host saturated is visible as such.

    .venv/bin/python bench/gateway.py [--calls 50 | --calls 20,40,60] [--seconds 20] [--frame-ms 40]
        [--workers 2] [--emulators 2] [--one-at-a-time] [--profile DIR] [--gateway-tree DIR]
        [--max-loop-lag-ms default,0] [--json bench/results/gateway.json]
    .venv/bin/python bench/gateway.py --codec     # µs per audio message: SDK vs lean path
    .venv/bin/python bench/gateway.py --heartbeat # event-loop stall of one Redis lease renewal

`--one-at-a-time` loads the bare relay and then the gateway, each with the whole host, instead
of both at once: on a quiet host the rig then reaches about twice the calls. `--profile DIR`
runs the gateway under cProfile (DIR/gateway.prof); `--gateway-tree DIR` runs the gateway from
another source tree (e.g. `git archive <commit> runtime | tar -x -C DIR`), to compare
versions on the same rig. `--max-loop-lag-ms default,0` runs a gateway per shedding limit,
each with the same load in the same run. Callers retry a refused handshake (503) as the widget
does (after 1, 2, 4 s); time to connect (first try to `session.started`) is reported. Every process of the rig runs on uvloop, as the gateway
and the emulator do, so the bare relay pays what the gateway's event loop pays.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import json
import os
import secrets
import ssl
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import uvloop
from aiohttp import web

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from runtime.emulator.audio import silence, synthetic_speech

ORIGIN = "https://shop.example"
INPUT_RATE = 16_000
SPEECH_MS = 600
SILENCE_MS = 1_900  # the VAD ends the turn after 500 ms; the rest covers the 1 s reply
VAD_SILENCE_MS = 500
SATURATED_HOST_PERCENT = 95.0  # a sweep stops here: beyond it the box, not a relay, is measured
MAX_START_SECONDS = 5.0  # a call that takes longer to start does not count as held
# As the widget (runtime/web/widget.js): a refused handshake (503, token unused) is tried
# again after 1, 2 and 4 s, then given up.
RETRIES = 3
SCENARIO = {
    "turns": [
        {
            "input_transcription": "Hello there.",
            "output_transcription": "Hi! How can I help?",
            "audio_ms": 1000,
        }
    ],
    "chunk_ms": 40,
    "pace": 1.0,
}
LIVE_PATH = "/ws/google.ai.generativelanguage.v1.GenerativeService.BidiGenerateContent"


# --- the bare relay baseline (its own process) ---------------------------------------------


def serve_bare_relay(port: int, emulator_url: str, ca_file: str, api_key: str) -> None:
    context = ssl.create_default_context(cafile=ca_file)

    async def relay(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        http = request.app[HTTP]
        async with http.ws_connect(
            emulator_url + LIVE_PATH, headers={"x-goog-api-key": api_key}, ssl=context
        ) as upstream:
            setup = {"model": "models/bench", "generationConfig": {"responseModalities": ["AUDIO"]}}
            await upstream.send_str(json.dumps({"setup": setup}))
            await upstream.receive()  # setupComplete
            await ws.send_str(json.dumps({"type": "session.started"}))

            async def to_model() -> None:
                async for message in ws:
                    if message.type is aiohttp.WSMsgType.BINARY:
                        audio = {
                            "data": base64.b64encode(message.data).decode(),
                            "mime_type": "audio/pcm;rate=16000",
                        }
                        await upstream.send_str(json.dumps({"realtime_input": {"audio": audio}}))

            async def to_caller() -> None:
                async for message in upstream:
                    content = json.loads(message.data).get("serverContent") or {}
                    for part in (content.get("modelTurn") or {}).get("parts") or []:
                        await ws.send_bytes(base64.b64decode(part["inlineData"]["data"]))

            tasks = [asyncio.create_task(to_model()), asyncio.create_task(to_caller())]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
        return ws

    async def http_ctx(app: web.Application) -> Any:
        # No connection cap: aiohttp's default of 100 would hold calls 101+ back.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            app[HTTP] = session
            yield

    app = web.Application()
    app.cleanup_ctx.append(http_ctx)
    app.router.add_get("/ws/call", relay)
    web.run_app(
        app,
        host="127.0.0.1",
        port=port,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


HTTP = web.AppKey("http", aiohttp.ClientSession)


# --- callers -------------------------------------------------------------------------------


@dataclass
class CallerStats:
    connected: bool = False
    held: bool = False
    error: str = ""
    frames_in: int = 0
    frames_out: int = 0
    connect_seconds: float = 0.0  # from the first attempt, retries included
    retries: int = 0
    stream_seconds: float = 0.0
    started_at: float = 0.0  # perf_counter when session.started arrived
    # (when the turn's wait began, latency): turns during the ramp are dropped afterwards
    turns: list[tuple[float, float]] = field(default_factory=list)


async def _connect_as_widget(
    http: aiohttp.ClientSession, url: str, stats: CallerStats
) -> aiohttp.ClientWebSocketResponse:
    while True:
        try:
            return await http.ws_connect(url, headers={"Origin": ORIGIN}, heartbeat=None)
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status != 503 or stats.retries >= RETRIES:
                raise
        stats.retries += 1
        await asyncio.sleep(0.5 * 2**stats.retries)


async def caller(
    http: aiohttp.ClientSession, url: str, *, frame_ms: int, until: float, stats: CallerStats
) -> None:
    frame_bytes = INPUT_RATE * 2 * frame_ms // 1000
    cycle = synthetic_speech(SPEECH_MS, "tone", 300.0, rate=INPUT_RATE) + silence(SILENCE_MS)
    frames = [cycle[i : i + frame_bytes] for i in range(0, len(cycle), frame_bytes)]
    trigger_index = (SPEECH_MS + VAD_SILENCE_MS) // frame_ms - 1
    waiting_since: list[float] = []
    began = time.perf_counter()
    try:
        ws = await _connect_as_widget(http, url, stats)
        async with ws:
            while True:
                message = await ws.receive(timeout=30)
                if message.type is not aiohttp.WSMsgType.TEXT:
                    stats.error = f"closed before start ({ws.close_code})"
                    return
                if json.loads(message.data)["type"] == "session.started":
                    break
            stats.connected = True
            stats.started_at = time.perf_counter()
            stats.connect_seconds = stats.started_at - began

            async def receive() -> None:
                async for message in ws:
                    if message.type is aiohttp.WSMsgType.BINARY:
                        stats.frames_out += 1
                        if waiting_since:
                            since = waiting_since.pop()
                            stats.turns.append((since, time.perf_counter() - since))
                    elif message.type is aiohttp.WSMsgType.TEXT:
                        event = json.loads(message.data)
                        if event["type"] == "error":
                            stats.error = event["code"]

            receiver = asyncio.create_task(receive())
            start = time.perf_counter()
            index = 0
            while time.perf_counter() < until and not ws.closed:
                await ws.send_bytes(frames[index % len(frames)])
                stats.frames_in += 1
                if index % len(frames) == trigger_index:
                    waiting_since[:] = [time.perf_counter()]
                index += 1
                # An absolute schedule: no drift however long a send took.
                await asyncio.sleep(max(0.0, start + index * frame_ms / 1000 - time.perf_counter()))
            stats.stream_seconds = time.perf_counter() - start
            # A caller kept waiting for its call to start has not been served in real time.
            stats.held = (
                not ws.closed and not stats.error and stats.connect_seconds <= MAX_START_SECONDS
            )
            receiver.cancel()
    except aiohttp.WSServerHandshakeError as exc:
        # 503 on every try: the gateway is full or overloaded and turned the call away.
        stats.error = "refused (503)" if exc.status == 503 else f"handshake {exc.status}"
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        stats.error = stats.error or type(exc).__name__


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def host_busy_seconds() -> float:
    """CPU seconds all cores spent busy (not idle, not waiting on I/O) since boot."""
    ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


async def wait_listening(http: aiohttp.ClientSession, url: str, process: Any) -> None:
    async with asyncio.timeout(30):
        while True:
            if process.returncode is not None:
                raise RuntimeError(f"{url} exited with {process.returncode}")
            try:
                async with http.get(url) as response:
                    if response.status < 500:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)


async def load_worker(config: dict[str, Any]) -> dict[str, Any]:
    """Run some of the callers (a worker process of its own: the load must not be the limit)."""
    calls: list[list[str]] = config["calls"]
    seconds, frame_ms = float(config["seconds"]), int(config["frame_ms"])
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        ramp = min(5.0, len(calls) * 0.02)
        until = time.perf_counter() + ramp + seconds
        stats = [CallerStats() for _ in calls]
        tasks = []
        for index, ((_, url), caller_stats) in enumerate(zip(calls, stats, strict=True)):
            tasks.append(
                asyncio.create_task(
                    caller(http, url, frame_ms=frame_ms, until=until, stats=caller_stats)
                )
            )
            await asyncio.sleep(ramp / len(calls) if index < len(calls) - 1 else 0)
        async with asyncio.timeout(seconds + ramp + 60):
            await asyncio.gather(*tasks)
    # Steady state: latency counts only for turns that began once every call was up (during
    # the ramp, calls still connecting weigh on the relays' latency).
    steady_from = max((caller_stats.started_at for caller_stats in stats), default=0.0)
    rows = []
    for (relay, _), caller_stats in zip(calls, stats, strict=True):
        row = {"relay": relay, **vars(caller_stats)}
        del row["turns"]
        row["latencies"] = [
            latency for since, latency in caller_stats.turns if since >= steady_from
        ]
        rows.append(row)
    return {"rows": rows, "cpu_seconds": time.process_time()}


async def run_load(
    relays: dict[str, tuple[asyncio.subprocess.Process, list[str]]],
    *,
    workers: int,
    frame_ms: int,
    seconds: float,
    emulator_pids: list[int],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """All relays under load at the same time, from `workers` load processes.

    Returns a row per relay and what the rig itself used (emulators, load processes, host).
    """
    async with aiohttp.ClientSession() as http:
        for process, urls in relays.values():
            base = urls[0].split("/ws/")[0].replace("ws://", "http://")
            await wait_listening(http, base + "/healthz", process)
    # Interleave the relays' calls so every worker carries the same mix.
    calls = [
        [name, url]
        for group in zip(
            *([(name, url) for url in urls] for name, (_, urls) in relays.items()), strict=True
        )
        for name, url in group
    ]
    shares = [calls[index::workers] for index in range(workers)]
    cpu_before = {name: cpu_seconds(process.pid) for name, (process, _) in relays.items()}
    emulators_before = sum(map(cpu_seconds, emulator_pids))
    host_before = host_busy_seconds()
    wall_before = time.perf_counter()
    processes = []
    for share in shares:
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--load-worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        processes.append((worker, share))
    outputs = await asyncio.gather(
        *(
            worker.communicate(
                json.dumps({"calls": share, "frame_ms": frame_ms, "seconds": seconds}).encode()
            )
            for worker, share in processes
        )
    )
    wall = time.perf_counter() - wall_before
    host = host_busy_seconds() - host_before
    cpu = {
        name: cpu_seconds(process.pid) - cpu_before[name] for name, (process, _) in relays.items()
    }
    emulators = sum(map(cpu_seconds, emulator_pids)) - emulators_before
    reports = [json.loads(stdout) for stdout, _ in outputs]
    per_call = [row for report in reports for row in report["rows"]]
    rig = {
        "wall_seconds": round(wall, 1),
        "host_cores": os.cpu_count(),
        "host_busy_percent_of_all_cores": round(100 * host / wall / (os.cpu_count() or 1), 1),
        "emulators_percent_of_core": round(100 * emulators / wall, 1),
        "load_processes_percent_of_core": round(
            100 * sum(report["cpu_seconds"] for report in reports) / wall, 1
        ),
    }
    rows = [
        _summary(name, [row for row in per_call if row["relay"] == name], cpu[name], wall)
        for name in relays
    ]
    return rows, rig


def percentile_of(values: list[float], p: float) -> float | None:
    """The p-th percentile of sorted seconds, in ms."""
    if not values:
        return None
    return round(values[min(len(values) - 1, int(p * len(values)))] * 1000, 1)


def _summary(name: str, rows: list[dict[str, Any]], cpu: float, wall: float) -> dict[str, Any]:
    latencies: list[float] = sorted(latency for row in rows for latency in row["latencies"])
    held = sum(row["held"] for row in rows)
    errors: dict[str, int] = {}
    for row in rows:
        if row["error"]:
            errors[row["error"]] = errors.get(row["error"], 0) + 1

    connects = sorted(row["connect_seconds"] for row in rows if row["connected"])
    return {
        "relay": name,
        "calls": len(rows),
        "calls_held": held,
        "errors": errors,
        # Summed over calls, each over its own streaming time: the steady-state relay rate.
        "frames_per_second": round(
            sum(
                (r["frames_in"] + r["frames_out"]) / r["stream_seconds"]
                for r in rows
                if r["stream_seconds"]
            ),
            1,
        ),
        "turns_measured": len(latencies),
        # Time to connect: first handshake attempt to session.started, retries included.
        "connect_ms_p50": percentile_of(connects, 0.50),
        "connect_ms_p99": percentile_of(connects, 0.99),
        "calls_retried": sum(1 for row in rows if row["retries"]),
        "latency_ms_p50": percentile_of(latencies, 0.50),
        "latency_ms_p99": percentile_of(latencies, 0.99),
        "cpu_percent_of_core": round(100 * cpu / wall, 1),
        "cpu_ms_per_call_second": round(1000 * cpu / wall / max(1, held), 3),
        # One core is 1000 ms of CPU per second: how many such calls it could carry.
        "calls_per_core": round(wall * max(1, held) / cpu) if cpu else None,
    }


async def loop_lag_ms(gateway_port: int) -> dict[str, float | None]:
    """p50, p90 and p99 of the gateway's event-loop lag over the run, from its /metrics
    histogram (each the upper bound of the bucket it falls in)."""
    from prometheus_client.parser import text_string_to_metric_families

    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{gateway_port}/metrics") as response,
    ):
        text = await response.text()
    buckets = [
        (float(sample.labels["le"]), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "orbis_gateway_event_loop_lag_seconds_bucket"
    ]
    count = buckets[-1][1] if buckets else 0.0

    def quantile(q: float) -> float | None:
        bound = next((le for le, below in buckets if below >= q * count), None)
        return None if bound is None or not count else round(1000 * bound, 1)

    return {"p50": quantile(0.5), "p90": quantile(0.9), "p99": quantile(0.99)}


async def bench(args: argparse.Namespace, calls: int) -> dict[str, Any]:
    # Imported here, not at the top: load workers start from this file and must start fast.
    from runtime.emulator.testing import emulator_process
    from tests.api.fixtures import api_settings, start_api, write_keyring
    from tests.services import free_port, postgres_server, redis_server

    work = Path(tempfile.mkdtemp(prefix="orbis-bench-gateway-"))
    with postgres_server() as pg, redis_server() as redis_srv:
        database = pg.create_database()
        settings = api_settings(pg.url(database), redis_srv.url(1), write_keyring(work))
        async with start_api(settings) as api, contextlib.AsyncExitStack() as emulators:
            # Both relays' sessions, spread by the kernel over processes sharing one port.
            emulator_settings: dict[str, object] = {
                "max_sessions": calls * (2 + len(args.max_loop_lag_ms)) + 10,
                "reuse_port": "true",
                "log_level": "warning",
            }
            emulator = await emulators.enter_async_context(
                emulator_process(work / "emulator-0", scenario=SCENARIO, settings=emulator_settings)
            )
            emulator_pids = [_pid(emulator.process)]
            for index in range(1, args.emulators):
                more = await emulators.enter_async_context(
                    emulator_process(
                        work / f"emulator-{index}",
                        scenario=SCENARIO,
                        cert=emulator.cert,
                        settings={**emulator_settings, "port": emulator.port},
                    )
                )
                emulator_pids.append(_pid(more.process))
            tenant = await api.signup(email=f"bench-{secrets.token_hex(4)}@example.com")
            agent = await api.create_agent(
                tenant, allowed_origins=[ORIGIN], max_concurrent_calls=1000
            )
            await _raise_org_limit(pg.url(database))
            bare_port = free_port()
            bare = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--bare-relay",
                str(bare_port),
                emulator.base_url,
                str(emulator.cert.cert_file),
                emulator.api_key,
            )
            tree = args.gateway_tree or REPO
            # One gateway per --max-loop-lag-ms value, each loaded in turn in the same run.
            gateways: dict[str, tuple[asyncio.subprocess.Process, int]] = {}
            for limit in args.max_loop_lag_ms:
                name = (
                    "gateway (google-genai)"
                    if limit is None
                    else "gateway (no shedding)"
                    if limit == 0
                    else f"gateway (limit {limit} ms)"
                )
                port = free_port()
                env = _gateway_env(
                    work / f"gw-{port}",
                    api.url,
                    api.internal_token,
                    redis_srv.url(2),
                    emulator,
                    port,
                    tree,
                    limit,
                )
                command = ["-m", "runtime.gateway"]
                if args.profile:
                    args.profile.mkdir(parents=True, exist_ok=True)
                    profile = str(args.profile.resolve() / f"gateway-{port}.prof")
                    command = ["-m", "cProfile", "-o", profile, *command]
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    *command,
                    env=env,
                    cwd=tree,
                    stderr=(work / f"gateway-{port}.log").open("wb"),
                )
                gateways[name] = (process, port)
            try:
                relays = {
                    "bare aiohttp relay": (bare, [f"ws://127.0.0.1:{bare_port}/ws/call"] * calls)
                }
                for name, (process, port) in gateways.items():
                    tokens = [
                        (await api.widget_session(agent["public_id"], origin=ORIGIN))["token"]
                        for _ in range(calls)
                    ]
                    relays[name] = (
                        process,
                        [f"ws://127.0.0.1:{port}/ws/call?token={token}" for token in tokens],
                    )
                load = functools.partial(
                    run_load,
                    workers=args.workers,
                    frame_ms=args.frame_ms,
                    seconds=args.seconds,
                    emulator_pids=emulator_pids,
                )
                if args.one_at_a_time:
                    # Each relay has the whole box in turn: the rig drives twice the calls
                    # before the host saturates, at the price of the two not sharing its noise.
                    results, rigs = [], []
                    for name, relay in relays.items():
                        rows, one_rig = await load({name: relay})
                        results += rows
                        rigs.append({"relay": name, **one_rig})
                    rig: dict[str, Any] = {
                        "host_busy_percent_of_all_cores": max(
                            r["host_busy_percent_of_all_cores"] for r in rigs
                        ),
                        "runs": rigs,
                    }
                else:
                    # Both relays carry the same load at the same time, so the machine's other
                    # work (a shared, noisy host) weighs on both alike.
                    results, rig = await load(relays)
                lags = {name: await loop_lag_ms(port) for name, (_, port) in gateways.items()}
            finally:
                for process in (bare, *(process for process, _ in gateways.values())):
                    process.terminate()
                    # Bounded: the gateway drains (ORBIS_DRAIN_TIMEOUT_SECONDS) then exits.
                    async with asyncio.timeout(60):
                        await process.wait()
    bare_row, *gateway_rows = results
    added = {
        row["relay"]: {
            key: (
                None
                if row[key] is None or bare_row[key] is None
                else round(row[key] - bare_row[key], 1)
            )
            for key in ("latency_ms_p50", "latency_ms_p99")
        }
        for row in gateway_rows
    }
    return {
        "command": " ".join(["bench/gateway.py", *sys.argv[1:]]),
        "frame_ms": args.frame_ms,
        "seconds": args.seconds,
        "emulators": args.emulators,
        "workers": args.workers,
        "one_at_a_time": args.one_at_a_time,
        "profiled": bool(args.profile),
        "results": results,
        "rig": rig,
        "gateway_added_latency_ms": added,
        "gateway_loop_lag_ms": lags,
        "cpu_ratio_gateway_to_bare": {
            row["relay"]: (
                round(row["cpu_percent_of_core"] / bare_row["cpu_percent_of_core"], 2)
                if bare_row["cpu_percent_of_core"]
                else None
            )
            for row in gateway_rows
        },
    }


async def _raise_org_limit(database_url: str) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await conn.execute("UPDATE orgs SET max_concurrent_calls = 100000")


def _pid(process: asyncio.subprocess.Process | None) -> int:
    assert process is not None
    return process.pid


def _gateway_env(
    work: Path,
    api_url: str,
    internal_token: str,
    redis_url: str,
    emulator: Any,
    port: int,
    tree: Path,
    max_loop_lag_ms: int | None,
) -> dict[str, str]:
    work.mkdir(parents=True, exist_ok=True)
    (work / "internal_token").write_text(internal_token + "\n")
    (work / "gemini_api_key").write_text(emulator.api_key + "\n")
    return {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")])),
        "ORBIS_GATEWAY_PORT": str(port),
        "ORBIS_DRAIN_TIMEOUT_SECONDS": "5",
        "ORBIS_INSTANCE_ID": "bench",
        "ORBIS_API_URL": api_url,
        "ORBIS_INTERNAL_TOKEN_FILE": str(work / "internal_token"),
        "ORBIS_REDIS_URL": redis_url,
        "ORBIS_GEMINI_API_KEY_FILE": str(work / "gemini_api_key"),
        "ORBIS_GEMINI_BASE_URL": emulator.base_url,
        "ORBIS_GEMINI_CA_FILE": str(emulator.cert.cert_file),
        "ORBIS_GEMINI_MODEL": "gemini-live-bench",
        "ORBIS_LOG_LEVEL": "warning",
        **({"ORBIS_MAX_LOOP_LAG_MS": str(max_loop_lag_ms)} if max_loop_lag_ms is not None else {}),
    }


def print_table(report: dict[str, Any]) -> None:
    columns = [
        ("relay", 24),
        ("calls", 6),
        ("calls_held", 11),
        ("frames_per_second", 18),
        ("latency_ms_p50", 15),
        ("latency_ms_p99", 15),
        ("connect_ms_p50", 15),
        ("connect_ms_p99", 15),
        ("calls_retried", 14),
        ("cpu_percent_of_core", 20),
        ("cpu_ms_per_call_second", 23),
        ("calls_per_core", 15),
    ]
    print("".join(name.ljust(width) for name, width in columns))
    for row in report["results"]:
        cells = []
        for name, width in columns:
            value = row[name]
            text = f"{value:.1f}" if isinstance(value, float) else str(value)
            cells.append(text.ljust(width))
        print("".join(cells))
        if row["errors"]:
            print(f"    errors: {row['errors']}")
    print(f"rig: {report['rig']}")
    if report["profiled"]:
        print("(gateway ran under cProfile: its CPU figures are inflated)")
    print(f"gateway added latency (ms): {report['gateway_added_latency_ms']}")
    print(f"gateway event-loop lag (ms, whole run): {report['gateway_loop_lag_ms']}")
    print(f"gateway CPU / bare relay CPU: {report['cpu_ratio_gateway_to_bare']}")


class _FrameSocket:
    """Stands in for the SDK's websocket when timing its per-message code: `send` drops the
    frame, `recv` hands back one fixed frame. Only the codec work is left to measure."""

    def __init__(self, frame: bytes) -> None:
        self.frame = frame

    async def send(self, message: str) -> None:
        return None

    async def recv(self, decode: bool | None = None) -> bytes:
        return self.frame


def codec_bench(repeats: int = 2000) -> list[dict[str, Any]]:
    """µs per audio message, the SDK's own methods against the lean ones, same process."""
    from google import genai
    from google.genai import live as genai_live
    from google.genai import types

    from runtime.gateway.live_wire import LiveWire

    client = genai.Client(api_key="codec-bench")
    rows = []
    for frame_ms in (20, 40, 100):
        pcm_in = synthetic_speech(frame_ms, "tone", 300.0, rate=INPUT_RATE)
        pcm_out = synthetic_speech(frame_ms, "tone", 440.0)
        blob = {"mimeType": "audio/pcm;rate=24000", "data": base64.b64encode(pcm_out).decode()}
        frame = json.dumps({"serverContent": {"modelTurn": {"parts": [{"inlineData": blob}]}}})
        socket = _FrameSocket(frame.encode())
        session = genai_live.AsyncSession(
            api_client=client._api_client,
            websocket=socket,  # type: ignore[arg-type]
        )
        wire = LiveWire(session)
        audio = types.Blob(data=pcm_in, mime_type="audio/pcm;rate=16000")
        paths = {
            "send: SDK send_realtime_input": functools.partial(
                session.send_realtime_input, audio=audio
            ),
            "send: lean": functools.partial(wire.send_audio, pcm_in, "audio/pcm;rate=16000"),
            "receive: SDK _receive": session._receive,
            "receive: lean": wire.receive,
        }

        async def timed(step: Any) -> float:
            for _ in range(50):  # warm-up: pydantic builds its validators on first use
                await step()
            best = float("inf")
            for _ in range(5):
                began = time.perf_counter()
                for _ in range(repeats):
                    await step()
                best = min(best, time.perf_counter() - began)
            return best / repeats * 1e6

        for name, step in paths.items():
            micros = uvloop.run(timed(step))
            rows.append({"frame_ms": frame_ms, "path": name, "us_per_message": round(micros, 1)})
    return rows


def print_codec(rows: list[dict[str, Any]]) -> None:
    print("frame_ms  path                              µs/message")
    for row in rows:
        print(f"{row['frame_ms']:<9} {row['path']:<33} {row['us_per_message']:>8.1f}")


async def _loop_gaps(gaps: list[float], stop: asyncio.Event) -> None:
    """Record how late a 1 ms timer fires, until `stop`: the event loop's stalls."""
    last = time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(0.001)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now


async def heartbeat_bench() -> list[dict[str, Any]]:
    """What one heartbeat (lease renewal of every local call in Redis) costs the event loop."""
    import redis.asyncio as aioredis

    from runtime.gateway.redis_state import CallRecord, CallState
    from tests.services import redis_server

    rows = []
    with redis_server() as redis_srv:
        client = aioredis.Redis.from_url(redis_srv.url(0))
        state = CallState(client, lease_seconds=30)
        for calls in (100, 1000):
            records = [
                CallRecord(f"call-{i}", "bench", f"agent-{i % 10}", "org", 0.0)
                for i in range(calls)
            ]
            await state.renew(records)  # warm: scripts loaded, keys exist
            gaps: list[float] = []
            stop = asyncio.Event()
            ticker = asyncio.create_task(_loop_gaps(gaps, stop))
            await asyncio.sleep(0.05)
            cpu, began = time.process_time(), time.perf_counter()
            await state.renew(records)
            wall, cpu = time.perf_counter() - began, time.process_time() - cpu
            await asyncio.sleep(0.05)
            stop.set()
            await ticker
            rows.append(
                {
                    "calls": calls,
                    "renew_ms": round(wall * 1000, 1),
                    "cpu_ms": round(cpu * 1000, 1),
                    "longest_loop_stall_ms": round(max(gaps) * 1000, 1),
                }
            )
        await client.aclose()
    return rows


def _call_counts(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            "a number of calls, or a comma list such as 20,40,60"
        ) from None


def _limits(text: str) -> list[int | None]:
    try:
        return [None if part == "default" else int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            "a limit in ms, or a comma list such as default,0"
        ) from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--calls",
        type=_call_counts,
        default=[50],
        help="calls per relay; a comma list (20,40,60) is a sweep that stops once the host "
        "saturates",
    )
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--frame-ms", type=int, default=40, choices=(20, 40, 50, 100))
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "gateway.json")
    parser.add_argument("--workers", type=int, default=2, help="load-generating processes")
    parser.add_argument("--emulators", type=int, default=2, help="emulator processes")
    parser.add_argument("--profile", type=Path, help="run the gateway under cProfile, into DIR")
    parser.add_argument("--gateway-tree", type=Path, help="run the gateway from this source tree")
    parser.add_argument("--codec", action="store_true", help="only time the audio messages")
    parser.add_argument(
        "--heartbeat", action="store_true", help="only time one Redis lease renewal of all calls"
    )
    parser.add_argument(
        "--one-at-a-time",
        action="store_true",
        help="load the bare relay, then the gateway, each with the whole host (default: both "
        "at once)",
    )
    parser.add_argument(
        "--max-loop-lag-ms",
        type=_limits,
        default=[None],
        help="the gateway's ORBIS_MAX_LOOP_LAG_MS (default: the gateway's own; 0: never shed); "
        "a comma list (default,0) runs one gateway per value, loaded in turn in the same run",
    )
    parser.add_argument("--bare-relay", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--load-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_worker:
        rows = uvloop.run(load_worker(json.load(sys.stdin)))
        json.dump(rows, sys.stdout)
        return 0
    if args.bare_relay:
        port, emulator_url, ca_file, api_key = args.bare_relay
        serve_bare_relay(int(port), emulator_url, ca_file, api_key)
        return 0
    if args.codec:
        print_codec(codec_bench())
        return 0
    if args.heartbeat:
        for row in uvloop.run(heartbeat_bench()):
            print(row)
        return 0
    if (
        not all(1 <= calls <= 2000 for calls in args.calls)
        or len(args.calls) > 10
        or not 1 <= args.seconds <= 600
        or not 1 <= args.workers <= 16
        or not 1 <= args.emulators <= 16
    ):
        parser.error(
            "--calls 1-2000 (at most 10 counts), --seconds 1-600, --workers 1-16, "
            "--emulators 1-16 (bounded load)"
        )
    reports = []
    for calls in args.calls:
        report = uvloop.run(bench(args, calls))
        print(f"--- {calls} calls per relay, {args.frame_ms} ms frames")
        print_table(report)
        reports.append(report)
        if report["rig"]["host_busy_percent_of_all_cores"] >= SATURATED_HOST_PERCENT:
            print(f"host saturated ({report['rig']['host_busy_percent_of_all_cores']} % busy):")
            print("larger counts would measure the box, not the relays; sweep stopped")
            break
    args.json.parent.mkdir(parents=True, exist_ok=True)
    result = reports[0] if len(args.calls) == 1 else {"sweep": reports}
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
