"""Call state shared through Redis: concurrent-call slots, the live-call registry, remote end.

Every live call holds a lease in three sorted sets (its agent's, its organisation's and the
global live set) scored by the lease's expiry in Redis server time, plus a hash describing
it. The owning instance renews all its leases every few seconds; when an instance dies its
leases lapse and its slots free themselves. Because the renewal re-creates anything missing,
a restarted (empty) Redis is repopulated within one heartbeat.

Any instance (or the API) ends a call with `request_call_end`: a flag key the owner checks
on each heartbeat, plus a pub/sub message so the owner reacts at once.
"""

from __future__ import annotations

import enum
import json
import secrets
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

# What a Redis call can raise when the server is down or restarting.
REDIS_ERRORS = (redis.exceptions.RedisError, OSError)

PREFIX = "orbis:gw"
LIVE_CALLS_KEY = f"{PREFIX}:calls:live"
END_CHANNEL = f"{PREFIX}:calls:end"


def agent_calls_key(agent_id: str) -> str:
    return f"{PREFIX}:calls:agent:{agent_id}"


def org_calls_key(org_id: str) -> str:
    return f"{PREFIX}:calls:org:{org_id}"


def call_key(call_id: str) -> str:
    return f"{PREFIX}:call:{call_id}"


def end_flag_key(call_id: str) -> str:
    return f"{PREFIX}:call:{call_id}:end"


# KEYS: agent set, org set, live set, call hash.
# ARGV: call id, agent limit, org limit (0: none), lease ms, enforce (1: check limits), then
# the call hash's field/value pairs. Returns "ok", "agent" or "org" (the limit that was hit).
_LEASE_SCRIPT = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local call_id = ARGV[1]
local lease = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if ARGV[5] == '1' then
  local agent_limit = tonumber(ARGV[2])
  local org_limit = tonumber(ARGV[3])
  if agent_limit > 0 and not redis.call('ZSCORE', KEYS[1], call_id)
      and redis.call('ZCARD', KEYS[1]) >= agent_limit then
    return 'agent'
  end
  if org_limit > 0 and not redis.call('ZSCORE', KEYS[2], call_id)
      and redis.call('ZCARD', KEYS[2]) >= org_limit then
    return 'org'
  end
end
local expires = now + lease
for i = 1, 3 do
  redis.call('ZADD', KEYS[i], expires, call_id)
  redis.call('PEXPIRE', KEYS[i], lease * 4)
end
redis.call('HSET', KEYS[4], 'heartbeat_ms', now, unpack(ARGV, 6))
redis.call('PEXPIRE', KEYS[4], lease)
return 'ok'
"""

# KEYS: agent set, org set, live set, call hash, end flag. ARGV: call id.
_RELEASE_SCRIPT = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[4], KEYS[5])
return 1
"""


class LeaseOutcome(enum.StrEnum):
    OK = "ok"
    AGENT_LIMIT = "agent"
    ORG_LIMIT = "org"


@dataclass(frozen=True)
class CallRecord:
    call_id: str
    instance_id: str
    agent_id: str
    org_id: str
    started_at: float

    def fields(self) -> list[str]:
        return [
            "call_id",
            self.call_id,
            "instance_id",
            self.instance_id,
            "agent_id",
            self.agent_id,
            "org_id",
            self.org_id,
            "started_at",
            repr(self.started_at),
        ]


# Calls renewed per Redis pipeline by a heartbeat (~4 ms of event-loop time each).
RENEW_BATCH = 100


class CallState:
    def __init__(self, client: aioredis.Redis, *, lease_seconds: int) -> None:
        self.client = client
        self._lease_ms = lease_seconds * 1000
        self._lease = client.register_script(_LEASE_SCRIPT)
        self._release = client.register_script(_RELEASE_SCRIPT)

    def _lease_keys(self, record: CallRecord) -> list[str]:
        return [
            agent_calls_key(record.agent_id),
            org_calls_key(record.org_id),
            LIVE_CALLS_KEY,
            call_key(record.call_id),
        ]

    async def acquire(
        self, record: CallRecord, *, agent_limit: int | None, org_limit: int | None
    ) -> LeaseOutcome:
        """Take a slot for the call, atomically checking the agent's and the org's limits."""
        outcome = await self._lease(
            keys=self._lease_keys(record),
            args=[
                record.call_id,
                agent_limit or 0,
                org_limit or 0,
                self._lease_ms,
                1,
                *record.fields(),
            ],
        )
        return LeaseOutcome(outcome.decode() if isinstance(outcome, bytes) else outcome)

    async def renew(self, records: list[CallRecord]) -> set[str]:
        """Renew the leases of live calls; returns the ids of those asked to end.

        In pipelines of RENEW_BATCH calls: one pipeline for 1000 calls held the event loop
        ~20 ms (every call's audio waits meanwhile); batches give it back between round trips.
        """
        to_end: set[str] = set()
        for start in range(0, len(records), RENEW_BATCH):
            to_end |= await self._renew_batch(records[start : start + RENEW_BATCH])
        return to_end

    async def _renew_batch(self, records: list[CallRecord]) -> set[str]:
        async with self.client.pipeline(transaction=False) as pipe:
            for record in records:
                await self._lease(
                    keys=self._lease_keys(record),
                    args=[record.call_id, 0, 0, self._lease_ms, 0, *record.fields()],
                    client=pipe,
                )
                pipe.exists(end_flag_key(record.call_id))
            results = await pipe.execute()
        flags = results[1::2]
        return {record.call_id for record, flag in zip(records, flags, strict=True) if flag}

    async def release(self, record: CallRecord) -> None:
        await self._release(
            keys=[*self._lease_keys(record), end_flag_key(record.call_id)], args=[record.call_id]
        )


async def list_live_calls(client: aioredis.Redis) -> list[dict[str, str]]:
    """Every call with an unexpired lease, from any instance."""
    seconds, micros = await client.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    call_ids = await client.zrangebyscore(LIVE_CALLS_KEY, now_ms, "+inf")
    if not call_ids:
        return []
    async with client.pipeline(transaction=False) as pipe:
        for call_id in call_ids:
            pipe.hgetall(call_key(_text(call_id)))
        hashes = await pipe.execute()
    return [
        {_text(key): _text(value) for key, value in fields.items()} for fields in hashes if fields
    ]


async def request_call_end(client: aioredis.Redis, call_id: str, *, reason: str) -> None:
    """Ask whichever instance owns `call_id` to end it (flag for heartbeats + pub/sub)."""
    await client.set(end_flag_key(call_id), reason, ex=600)
    await client.publish(END_CHANNEL, json.dumps({"call_id": call_id, "reason": reason}))


def parse_end_message(data: Any) -> str | None:
    try:
        message = json.loads(_text(data))
    except (ValueError, TypeError):
        return None
    call_id = message.get("call_id") if isinstance(message, dict) else None
    return call_id if isinstance(call_id, str) else None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# --- moving a call to another instance (drain) -------------------------------------------------
#
# The offer changes hands once, and exactly one instance ends up owning the call:
# - the draining instance stores the offer (`offer_handoff`) and keeps owning the call while
#   the offer exists;
# - a resume attempt reserves the offer (`reserve_handoff`, a short lease: one attempt at a
#   time), sets the call up, and only then takes it (`take_handoff`); an attempt that fails
#   before that lets go (`release_handoff`) or its lease lapses, so the widget's retry, or
#   nginx's retry on another gateway, finds the token still good;
# - the draining instance waits for the offer to be taken, and when its drain time is up
#   withdraws it (`withdraw_handoff`): whichever of take and withdraw deletes the offer owns
#   the call.

# How long the draining instance waits for the move on top of its drain timeout; the offer
# outlives that (a crashed instance cannot withdraw it).
HANDOFF_EXTRA_SECONDS = 60
RESERVATION_SECONDS = 10

_RELEASE_RESERVATION_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def handoff_key(token: str) -> str:
    return f"{PREFIX}:handoff:{token}"


def handoff_reservation_key(token: str) -> str:
    return f"{PREFIX}:handoff:{token}:reserved"


async def offer_handoff(
    client: aioredis.Redis, offer: dict[str, Any], *, wait_seconds: float
) -> str:
    """Store what another instance needs to continue a call, for as long as the offering
    instance waits for it (`wait_seconds`) and then some; returns the single-use token."""
    token = secrets.token_urlsafe(24)
    lifetime = int(wait_seconds) + HANDOFF_EXTRA_SECONDS
    await client.set(handoff_key(token), json.dumps(offer), ex=lifetime)
    return token


async def peek_handoff(client: aioredis.Redis, token: str) -> dict[str, Any] | None:
    raw = await client.get(handoff_key(token))
    if raw is None:
        return None
    offer: dict[str, Any] = json.loads(raw)
    return offer


async def reserve_handoff(client: aioredis.Redis, token: str, attempt: str) -> bool:
    """Hold the offer for one resume attempt; False while another attempt holds it."""
    reserved = await client.set(
        handoff_reservation_key(token), attempt, nx=True, ex=RESERVATION_SECONDS
    )
    return bool(reserved)


async def release_handoff(client: aioredis.Redis, token: str, attempt: str) -> None:
    """Let go of a reservation this attempt holds (an attempt that did not take the call)."""
    await client.eval(_RELEASE_RESERVATION_SCRIPT, 1, handoff_reservation_key(token), attempt)


async def take_handoff(client: aioredis.Redis, token: str) -> bool:
    """Take the call over, once it is set up here; False when the offering instance withdrew
    the offer first (it then ended the call itself)."""
    taken = await client.getdel(handoff_key(token)) is not None
    await client.delete(handoff_reservation_key(token))
    return taken


async def handoff_pending(client: aioredis.Redis, token: str) -> bool:
    """The offer is still there: nobody has taken the call yet."""
    return bool(await client.exists(handoff_key(token)))


async def withdraw_handoff(client: aioredis.Redis, token: str) -> bool:
    """Take the offer back; True when it was still there (the call stays ours to end)."""
    return await client.getdel(handoff_key(token)) is not None
