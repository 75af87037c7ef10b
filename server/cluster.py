"""What the server processes ("nodes") of one site share through Redis when
``PERMANENCE_REDIS_URL`` is set: the committed events, and who is connected where.

Without Redis one process is the whole site and nothing here runs (``make run``, the embedded
default). With it:

- ``EventBus``: every committed event (``server/events.py``) is published once on a Redis
  channel; every other node hands it to its own subscribers, which act on their own sockets
  only. The publishing node dispatches locally as before.
- ``Node``: this process's id and heartbeat (a key that expires ``NODE_TTL_SECONDS`` after the
  last beat). What a node registers (presence, sockets) carries its id, so that when a node
  dies — no SIGTERM, no clean-up — readers ignore its records at once after the expiry and a
  janitor on a living node removes them and acts on the departures.
- ``SocketRegistry``: the sockets of assistance rooms on every node (session, role, account),
  so that a relay to a peer on another node is checked like one to a local peer, and a dead
  node's peers leave their rooms.

Redis here is a message bus and a presence board, never the record: everything durable stays in
the database, and a lost Redis loses only live state that the pages rebuild when they
reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from server.events import Dispatcher, Event, event_from_json, event_to_json

log = logging.getLogger(__name__)

PREFIX = "vp:"
EVENTS_CHANNEL = PREFIX + "events"
NODE_BEAT_SECONDS = 5.0
NODE_TTL_SECONDS = 15.0  # three beats missed: the node is gone
RECONNECT_SECONDS = 1.0
MAX_CONNECTIONS = 100  # per process; more callers wait for one (redis_client)


def texts(values: Iterable[bytes | str] | None) -> list[str]:
    """Redis replies as text (the client decodes; its types say bytes too)."""
    return [v.decode() if isinstance(v, bytes) else v for v in values or ()]


def text(value: bytes | str | None) -> str | None:
    """One Redis reply as text."""
    return value.decode() if isinstance(value, bytes) else value


def redis_client(url: str) -> aioredis.Redis:
    """A client for ``url`` with short timeouts: a stalled Redis must not stall the loop.

    Its pool *waits* (up to the same timeout) for a free connection past MAX_CONNECTIONS:
    redis-py's default pool raises ``MaxConnectionsError`` at once past 100 connections, which
    under a burst (1,000 relays/s on a busy machine, BENCHMARKS.md "Findings") lost relayed
    candidates."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=2.0,
        decode_responses=True,
        socket_timeout=2.0,
        socket_connect_timeout=2.0,
        health_check_interval=10,
    )
    return aioredis.Redis.from_pool(pool)


class Node:
    """This process in the cluster: a random id and a heartbeat key that expires."""

    def __init__(self, redis: aioredis.Redis, node_id: str | None = None) -> None:
        self.redis = redis
        self.id = node_id or secrets.token_hex(6)
        self._task: asyncio.Task[None] | None = None
        self._beat_hooks: list[Callable[[], Awaitable[None]]] = []
        self._live_cache: tuple[float, frozenset[str]] = (-1.0, frozenset())

    @staticmethod
    def key(node_id: str) -> str:
        return f"{PREFIX}node:{node_id}"

    def on_beat(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``hook`` after every heartbeat (the janitors)."""
        self._beat_hooks.append(hook)

    async def beat(self) -> None:
        """Say this node is alive for NODE_TTL_SECONDS more."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self.key(self.id), "1", px=int(NODE_TTL_SECONDS * 1000))
            pipe.sadd(PREFIX + "nodes", self.id)
            await pipe.execute()

    async def live(self, node_ids: Iterable[str]) -> frozenset[str]:
        """Those of ``node_ids`` whose heartbeat has not expired (this node always is)."""
        wanted = sorted(set(node_ids) - {self.id})
        if not wanted:
            return frozenset({self.id})
        values = await self.redis.mget([self.key(n) for n in wanted])
        return frozenset([self.id, *(n for n, v in zip(wanted, values, strict=True) if v)])

    def start(self) -> None:
        """Beat now and then every NODE_BEAT_SECONDS."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="cluster-heartbeat")

    async def _run(self) -> None:
        while True:
            try:
                await self.beat()
                for hook in list(self._beat_hooks):
                    try:
                        await hook()
                    except RedisError:
                        raise
                    except Exception:
                        log.exception("cluster janitor %r failed", hook)
            except RedisError as exc:
                log.warning("cluster heartbeat: Redis unavailable (%s)", exc)
            await asyncio.sleep(NODE_BEAT_SECONDS)

    async def stop(self) -> None:
        """Stop beating and say this node is gone (a clean stop needs no expiry)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(RedisError, OSError):
            await self.redis.delete(self.key(self.id))


class EventBus:
    """Committed events to and from the other nodes, over one Redis pub/sub channel."""

    def __init__(self, redis: aioredis.Redis, dispatcher: Dispatcher, node_id: str) -> None:
        self.redis = redis
        self.dispatcher = dispatcher
        self.node_id = node_id
        self.received = 0  # events from other nodes (tests, benchmarks)
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def forward(self, events: Sequence[Event]) -> None:
        """Publish events committed here (the dispatcher's forwarder)."""
        message = json.dumps(
            {"node": self.node_id, "events": [event_to_json(e) for e in events]},
            separators=(",", ":"),
        )
        try:
            await self.redis.publish(EVENTS_CHANNEL, message)
        except RedisError as exc:
            # The other nodes miss this change; their next push (any later change, the
            # pages' own reconnection) brings their screens up to date.
            log.warning("event bus: could not publish %d event(s): %s", len(events), exc)

    async def start(self) -> None:
        """Listen to the other nodes (returns once subscribed)."""
        self.dispatcher.add_forwarder(self.forward)
        self._task = asyncio.get_running_loop().create_task(self._listen(), name="event-bus")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), 5.0)

    async def stop(self) -> None:
        """Stop publishing and listening."""
        self.dispatcher.remove_forwarder(self.forward)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen(self) -> None:
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(EVENTS_CHANNEL)
                self._ready.set()
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        await self._received(message["data"])
            except (RedisError, OSError) as exc:
                log.warning("event bus: Redis unavailable (%s), reconnecting", exc)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _received(self, data: str) -> None:
        try:
            message = json.loads(data)
            if message.get("node") == self.node_id:
                return
            events = [event_from_json(item) for item in message["events"]]
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("event bus: unreadable message dropped (%s)", exc)
            return
        known = [e for e in events if e is not None]
        self.received += len(known)
        await self.dispatcher.dispatch(known, forward=False)


@dataclass(frozen=True)
class RoomSocket:
    """A socket in an assistance room, on some node."""

    node: str
    session_id: str
    role: str
    sid: str
    user_id: int | None

    def member(self) -> str:
        user = "" if self.user_id is None else str(self.user_id)
        return "|".join((self.node, self.session_id, self.role, self.sid, user))

    @classmethod
    def parse(cls, member: str) -> RoomSocket | None:
        parts = member.split("|")
        if len(parts) != 5:
            return None
        node, session_id, role, sid, user = parts
        return cls(node, session_id, role, sid, int(user) if user.isdigit() else None)


class SocketRegistry:
    """The assistance rooms' sockets of every node: ``vp:room-sockets`` (a set of records, for
    the janitor) and ``vp:sock:<sid>`` (the record of one sid, for a relay's checks)."""

    SET = PREFIX + "room-sockets"

    def __init__(self, node: Node) -> None:
        self.node = node
        self.redis = node.redis

    @staticmethod
    def _key(sid: str) -> str:
        return f"{PREFIX}sock:{sid}"

    async def add(self, session_id: str, role: str, sid: str, user_id: int | None) -> None:
        """A socket of this node joined a room."""
        record = RoomSocket(self.node.id, session_id, role, sid, user_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.sadd(self.SET, record.member())
            pipe.set(self._key(sid), record.member())
            await pipe.execute()

    async def remove(self, sid: str) -> None:
        """A socket of this node left its room."""
        member = text(await self.redis.get(self._key(sid)))
        async with self.redis.pipeline(transaction=False) as pipe:
            if member:
                pipe.srem(self.SET, member)
            pipe.delete(self._key(sid))
            await pipe.execute()

    async def find(self, sid: str) -> RoomSocket | None:
        """The room record of ``sid`` if its node is alive."""
        member = text(await self.redis.get(self._key(sid)))
        record = RoomSocket.parse(member) if member else None
        if record is None or record.node not in await self.node.live([record.node]):
            return None
        return record

    async def take_orphans(self) -> list[RoomSocket]:
        """Records of nodes that died, removed by this call (each orphan goes to one caller,
        whichever node's janitor removes it first)."""
        members = texts(await self.redis.smembers(self.SET))
        records = [r for m in members if (r := RoomSocket.parse(m)) is not None]
        live = await self.node.live(r.node for r in records)
        taken = []
        for record in records:
            if record.node in live:
                continue
            if await self.redis.srem(self.SET, record.member()):
                await self.redis.delete(self._key(record.sid))
                taken.append(record)
        return taken


@dataclass
class Cluster:
    """This node's view of the cluster: the Redis client, its heartbeat, the event bus and the
    rooms' socket registry (``server/runtime.py`` builds it when Redis is configured)."""

    redis: aioredis.Redis
    node: Node
    bus: EventBus
    rooms: SocketRegistry

    @classmethod
    def connect(cls, url: str, dispatcher: Dispatcher) -> Cluster:
        """Everything for ``url``; nothing runs until ``start``."""
        redis = redis_client(url)
        node = Node(redis)
        return cls(redis, node, EventBus(redis, dispatcher, node.id), SocketRegistry(node))

    async def start(self) -> None:
        """Beat, then listen to the other nodes."""
        await self.node.beat()
        self.node.start()
        await self.bus.start()

    async def stop(self) -> None:
        """Stop listening and beating; close the connections."""
        await self.bus.stop()
        await self.node.stop()
        await self.redis.aclose()


class Turns:
    """Chores that run once per cluster, not once per node (the daily retention purge, the
    minute's housekeeping): the node that sets the chore's key first does it; the key expires
    just before the next turn is due. Without Redis (one process) every turn is ours."""

    def __init__(self, url: str) -> None:
        self.redis = redis_client(url) if url else None
        self.node = secrets.token_hex(6)

    async def mine(self, chore: str, period_seconds: float) -> bool:
        """Whether this node does ``chore`` now (nobody did it in the last ``period_seconds``,
        less a margin). If Redis cannot be asked, yes: the chores are idempotent, and done
        twice is better than not at all."""
        if self.redis is None:
            return True
        expiry_ms = max(1000, int(period_seconds * 1000 * 0.95))
        try:
            taken = await self.redis.set(f"{PREFIX}turn:{chore}", self.node, nx=True, px=expiry_ms)
        except (RedisError, OSError) as exc:
            log.warning("cluster turn for %s: Redis unavailable (%s); doing it here", chore, exc)
            return True
        return bool(taken)

    async def close(self) -> None:
        """Close the connection."""
        if self.redis is not None:
            with contextlib.suppress(RedisError, OSError):
                await self.redis.aclose()
