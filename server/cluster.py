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
- ``RelayChannel``: signalling relayed to a peer of another node goes on that node's own
  channel (``vp:relay:<node>``), so only the target node reads it; python-socketio's manager
  channel, which every node decodes, carries only what is for a whole room.

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
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from server.errors import DomainError, Kind
from server.events import Dispatcher, Event, event_from_json, event_to_json
from server.i18n import _
from server.logs import Throttle

log = logging.getLogger(__name__)

PREFIX = "vp:"
EVENTS_CHANNEL = PREFIX + "events"
NODE_BEAT_SECONDS = 5.0
NODE_TTL_SECONDS = 15.0  # three beats missed: the node is gone
LIVE_CACHE_SECONDS = 1.0
# A room record found is believed this long (a socket never changes node, room or role; the
# target node checks the room again on delivery, so a stale record delivers nothing).
FOUND_CACHE_SECONDS = 2.0
FOUND_CACHE_MAX = 10_000
RELAY_CHANNEL = PREFIX + "relay:"
RELAY_OUTBOX_MAX = 10_000
RELAY_BATCH_MAX = 200  # publications per Redis round trip
RECONNECT_SECONDS = 1.0
LISTEN_POLL_SECONDS = 1.0
STOP_GRACE_SECONDS = 3.0
OUTBOX_MAX = 10_000  # events waiting for Redis before new ones are dropped
MAX_CONNECTIONS = 100  # per process; more callers wait for one (redis_client)


def texts(values: Iterable[bytes | str] | None) -> list[str]:
    """Redis replies as text (the client decodes; its types say bytes too)."""
    return [v.decode() if isinstance(v, bytes) else v for v in values or ()]


def text(value: bytes | str | None) -> str | None:
    """One Redis reply as text."""
    return value.decode() if isinstance(value, bytes) else value


class RedisOutage:
    """Live state degrades, never fails, while Redis does not answer: each call site catches
    ``REDIS_ERRORS`` and reports here, which logs a WARNING at most every ``every`` seconds."""

    def __init__(self, every: float = 10.0) -> None:
        self._throttle = Throttle(every)

    def __call__(self, what: str, exc: BaseException) -> None:
        count = self._throttle.due()
        if count is not None:
            log.warning(
                "Redis unavailable (%s: %s), live state degraded: %d call(s) since last line",
                what,
                exc,
                count,
            )


REDIS_ERRORS = (RedisError, OSError)


class ClusterUnavailable(DomainError):
    """The other nodes cannot be reached now (Redis does not answer): the peer is told to try
    again later, as for a database outage."""

    default_kind = Kind.UNAVAILABLE

    def __init__(self) -> None:
        super().__init__(
            "unavailable",
            _("Le service est momentanément indisponible. Réessayez dans quelques instants."),
        )


outage = RedisOutage()


async def stop_tasks(*tasks: asyncio.Task[None] | None) -> None:
    """Cancel ``tasks`` and wait for them, STOP_GRACE_SECONDS at most: a task stuck in a
    Redis call must not keep the node from stopping."""
    running = [task for task in tasks if task is not None and not task.done()]
    for task in running:
        task.cancel()
    if running:
        _done, pending = await asyncio.wait(running, timeout=STOP_GRACE_SECONDS)
        for task in pending:
            log.warning("cluster: task %s did not stop in time, left behind", task.get_name())


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
        self._restore_hooks: list[Callable[[], Awaitable[None]]] = []
        self._alive_until: dict[str, float] = {}  # other node → believed alive until

    @staticmethod
    def key(node_id: str) -> str:
        return f"{PREFIX}node:{node_id}"

    def on_beat(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``hook`` after every heartbeat (the janitors)."""
        self._beat_hooks.append(hook)

    def on_restore(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``hook`` when Redis has lost this node's records (a Redis restarted empty, or
        this node silent past its expiry): it writes them again."""
        self._restore_hooks.append(hook)

    async def beat(self) -> None:
        """Say this node is alive for NODE_TTL_SECONDS more; if Redis did not know it (first
        beat, or Redis restarted), write this node's records again."""
        previous = await self.redis.set(
            self.key(self.id), "1", px=int(NODE_TTL_SECONDS * 1000), get=True
        )
        if previous is None:
            for hook in list(self._restore_hooks):
                await hook()

    async def live(self, node_ids: Iterable[str]) -> frozenset[str]:
        """Those of ``node_ids`` whose heartbeat has not expired (this node always is). A node
        found alive is believed for LIVE_CACHE_SECONDS (a relay to another node's peer then
        costs one Redis read, not two); a dead one is asked about every time."""
        now = time.monotonic()
        wanted = sorted(set(node_ids) - {self.id})
        fresh = {n for n, until in self._alive_until.items() if until > now}
        unknown = [n for n in wanted if n not in fresh]
        if unknown:
            values = await self.redis.mget([self.key(n) for n in unknown])
            for found, value in zip(unknown, values, strict=True):
                if value:
                    self._alive_until[found] = now + LIVE_CACHE_SECONDS
                    fresh.add(found)
                else:
                    self._alive_until.pop(found, None)
        return frozenset([self.id, *(n for n in wanted if n in fresh)])

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
                    except REDIS_ERRORS:
                        raise
                    except Exception:
                        log.exception("cluster janitor %r failed", hook)
            except REDIS_ERRORS as exc:
                outage("cluster heartbeat", exc)
            await asyncio.sleep(NODE_BEAT_SECONDS)

    async def stop(self) -> None:
        """Stop beating and say this node is gone (a clean stop needs no expiry)."""
        await stop_tasks(self._task)
        with contextlib.suppress(RedisError, OSError):
            await self.redis.delete(self.key(self.id))


async def listen(
    redis: aioredis.Redis,
    channel: str,
    handle: Callable[[str], Awaitable[None]],
    ready: asyncio.Event,
    stopping: Callable[[], bool],
    what: str,
) -> None:
    """``handle`` each message published on ``channel`` until ``stopping()``, subscribing again
    after a Redis failure; ``ready`` is set once subscribed.

    Polled with a short timeout rather than ``pubsub.listen()``: a task cancelled inside
    redis-py's read after a reconnection sometimes never finished cancelling, and the node then
    never stopped. Here a stop only sets a flag."""
    while not stopping():
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(channel)
            ready.set()
            while not stopping():
                message = await pubsub.get_message(timeout=LISTEN_POLL_SECONDS)
                if message is not None and message.get("type") == "message":
                    await handle(message["data"])
        except REDIS_ERRORS as exc:
            outage(f"{what} subscription", exc)
        finally:
            with contextlib.suppress(*REDIS_ERRORS):
                await pubsub.aclose()
        if not stopping():
            await asyncio.sleep(RECONNECT_SECONDS)


class EventBus:
    """Committed events to and from the other nodes, over one Redis pub/sub channel."""

    def __init__(self, redis: aioredis.Redis, dispatcher: Dispatcher, node_id: str) -> None:
        self.redis = redis
        self.dispatcher = dispatcher
        self.node_id = node_id
        self.received = 0  # events from other nodes (tests, benchmarks)
        self._task: asyncio.Task[None] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._stopping = False
        # Published in order by one task, so that a slow or absent Redis never holds up the
        # request that committed them.
        self._outbox: asyncio.Queue[str] = asyncio.Queue(maxsize=OUTBOX_MAX)

    async def forward(self, events: Sequence[Event]) -> None:
        """Queue the events committed here for the other nodes (the dispatcher's forwarder)."""
        message = json.dumps(
            {"node": self.node_id, "events": [event_to_json(e) for e in events]},
            separators=(",", ":"),
        )
        try:
            self._outbox.put_nowait(message)
        except asyncio.QueueFull:
            outage("event bus, queue full: events dropped", RedisError("not draining"))

    async def _send(self) -> None:
        while True:
            message = await self._outbox.get()
            try:
                await self.redis.publish(EVENTS_CHANNEL, message)
            except REDIS_ERRORS as exc:
                # The other nodes miss this change; their next push (any later change, the
                # pages' own reconnection) brings their screens up to date.
                outage("event bus publish", exc)

    async def start(self, wait: bool = True) -> None:
        """Listen to the other nodes (returns once subscribed, if ``wait``)."""
        self.dispatcher.add_forwarder(self.forward)
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._listen(), name="event-bus")
        self._sender = loop.create_task(self._send(), name="event-bus-sender")
        if wait:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), 5.0)

    async def stop(self) -> None:
        """Stop publishing and listening."""
        self.dispatcher.remove_forwarder(self.forward)
        self._stopping = True
        await stop_tasks(self._task, self._sender)

    async def _listen(self) -> None:
        await listen(
            self.redis,
            EVENTS_CHANNEL,
            self._received,
            self._ready,
            lambda: self._stopping,
            "event bus",
        )

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


class Absences:
    """A janitor's view of this node's records whose socket is no longer held here: retired on
    the second pass in a row, so that a socket still connecting, or whose departure is being
    written, is never taken for a ghost."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def confirmed(self, sids: Iterable[str], held: Callable[[str], bool]) -> set[str]:
        """Those of ``sids`` not ``held`` now nor at the previous pass."""
        absent = {sid for sid in sids if not held(sid)}
        gone = absent & self._seen
        self._seen = absent - gone
        return gone


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
        self._mine: dict[str, RoomSocket] = {}  # this node's sockets, to write them again
        self._found: dict[str, tuple[RoomSocket, float]] = {}  # sid → record, believed until
        node.on_restore(self.restore)

    @staticmethod
    def _key(sid: str) -> str:
        return f"{PREFIX}sock:{sid}"

    async def add(self, session_id: str, role: str, sid: str, user_id: int | None) -> None:
        """A socket of this node joined a room."""
        record = RoomSocket(self.node.id, session_id, role, sid, user_id)
        self._mine[sid] = record
        try:
            await self._write([record])
        except REDIS_ERRORS as exc:  # written again once Redis is back (restore)
            outage("room socket registry", exc)

    async def _write(self, records: Iterable[RoomSocket]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for record in records:
                pipe.sadd(self.SET, record.member())
                pipe.set(self._key(record.sid), record.member())
            await pipe.execute()

    def local(self) -> dict[str, RoomSocket]:
        """This node's records, by sid."""
        return dict(self._mine)

    async def restore(self) -> None:
        """Write this node's records again (Redis lost them)."""
        if self._mine:
            log.warning("cluster: writing %d room socket(s) to Redis again", len(self._mine))
            await self._write(list(self._mine.values()))

    async def remove(self, sid: str) -> None:
        """A socket of this node left its room."""
        record = self._mine.pop(sid, None)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                if record is not None:
                    pipe.srem(self.SET, record.member())
                pipe.delete(self._key(sid))
                await pipe.execute()
        except REDIS_ERRORS as exc:  # this node's records are retired when it goes, anyway
            outage("room socket registry", exc)

    async def find(self, sid: str) -> RoomSocket | None:
        """The room record of ``sid`` if its node is alive; ClusterUnavailable while Redis does
        not answer (the sender is told to try again, not that its peer is gone)."""
        now = time.monotonic()
        cached = self._found.get(sid)
        try:
            if cached is not None and cached[1] > now:
                record: RoomSocket | None = cached[0]
            else:
                member = text(await self.redis.get(self._key(sid)))
                record = RoomSocket.parse(member) if member else None
                if record is not None:
                    self._remember(sid, record, now)
            if record is None or record.node not in await self.node.live([record.node]):
                return None
        except REDIS_ERRORS as exc:
            outage("room socket registry", exc)
            raise ClusterUnavailable() from exc
        return record

    def _remember(self, sid: str, record: RoomSocket, now: float) -> None:
        if len(self._found) >= FOUND_CACHE_MAX:
            self._found = {k: v for k, v in self._found.items() if v[1] > now}
            if len(self._found) >= FOUND_CACHE_MAX:
                self._found.clear()
        self._found[sid] = (record, now + FOUND_CACHE_SECONDS)

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


Delivery = Callable[[str], Awaitable[None]]
Lost = Callable[[str, str], Awaitable[None]]


class RelayChannel:
    """Messages relayed to one peer of another node, on that node's own Redis channel.

    A message is ``<target sid>|<session id>|<Socket.IO frame>``, the frame encoded once by the
    sender; the target node checks the sid is still in that session's room and hands the frame
    to its socket, without decoding it (``on_message``). The sender's messages go out in order
    through one task, several per Redis round trip (a pipeline); if Redis does not take them,
    each sender is told (``on_lost``), as for a lookup that fails.
    """

    def __init__(self, redis: aioredis.Redis, node_id: str) -> None:
        self.redis = redis
        self.node_id = node_id
        self.received = 0  # messages for this node's peers (tests, benchmarks)
        self._deliver: Delivery | None = None
        self._lost: Lost | None = None
        self._outbox: asyncio.Queue[tuple[str, str, str, str]] = asyncio.Queue(RELAY_OUTBOX_MAX)
        self._listener: asyncio.Task[None] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._stopping = False

    @staticmethod
    def channel(node_id: str) -> str:
        return RELAY_CHANNEL + node_id

    def on_message(self, deliver: Delivery, lost: Lost) -> None:
        """``deliver(message)`` for each message to this node's peers; ``lost(sender, event)``
        for each message of this node's senders that Redis did not take."""
        self._deliver, self._lost = deliver, lost

    def send(
        self, node_id: str, to: str, session_id: str, frame: str, sender: str, event: str
    ) -> bool:
        """Queue one message for ``to`` on ``node_id``; False if the queue is full."""
        try:
            self._outbox.put_nowait((node_id, f"{to}|{session_id}|{frame}", sender, event))
        except asyncio.QueueFull:
            return False
        return True

    async def start(self, wait: bool = True) -> None:
        """Listen on this node's channel (returns once subscribed, if ``wait``) and send."""
        loop = asyncio.get_running_loop()
        self._listener = loop.create_task(self._listen(), name="relay-channel")
        self._sender = loop.create_task(self._send(), name="relay-channel-sender")
        if wait:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), 5.0)

    async def stop(self) -> None:
        """Stop sending and listening."""
        self._stopping = True
        await stop_tasks(self._listener, self._sender)

    async def _send(self) -> None:
        while True:
            batch = [await self._outbox.get()]
            while len(batch) < RELAY_BATCH_MAX and not self._outbox.empty():
                batch.append(self._outbox.get_nowait())
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for node_id, message, _sender, _frame in batch:
                        pipe.publish(self.channel(node_id), message)
                    await pipe.execute()
            except REDIS_ERRORS as exc:
                outage("relay channel publish", exc)
                if self._lost is not None:
                    for _node, _message, sender, event in batch:
                        with contextlib.suppress(Exception):
                            await self._lost(sender, event)

    async def _listen(self) -> None:
        await listen(
            self.redis,
            self.channel(self.node_id),
            self._received,
            self._ready,
            lambda: self._stopping,
            "relay channel",
        )

    async def _received(self, message: str) -> None:
        self.received += 1
        if self._deliver is not None:
            try:
                await self._deliver(message)
            except Exception:
                log.exception("relay channel: delivery failed")


@dataclass
class Cluster:
    """This node's view of the cluster: the Redis client, its heartbeat, the event bus, the
    rooms' socket registry and the relay channel (``server/runtime.py`` builds it when Redis
    is configured)."""

    redis: aioredis.Redis
    node: Node
    bus: EventBus
    rooms: SocketRegistry
    relay: RelayChannel

    @classmethod
    def connect(cls, url: str, dispatcher: Dispatcher) -> Cluster:
        """Everything for ``url``; nothing runs until ``start``."""
        redis = redis_client(url)
        node = Node(redis)
        return cls(
            redis,
            node,
            EventBus(redis, dispatcher, node.id),
            SocketRegistry(node),
            RelayChannel(redis, node.id),
        )

    async def start(self) -> None:
        """Beat, then listen to the other nodes. A node starts even if Redis does not answer
        yet (``/readyz`` says so, the heartbeat and the bus keep trying): serving pages alone
        beats not serving them."""
        try:
            await self.node.beat()
            reachable = True
        except (RedisError, OSError) as exc:
            log.warning("cluster: Redis unavailable at start (%s); retrying in the background", exc)
            reachable = False
        self.node.start()
        await self.bus.start(wait=reachable)
        await self.relay.start(wait=reachable)

    async def stop(self) -> None:
        """Stop listening and beating; close the connections."""
        await self.relay.stop()
        await self.bus.stop()
        await self.node.stop()
        with contextlib.suppress(TimeoutError, *REDIS_ERRORS):
            await asyncio.wait_for(self.redis.aclose(), STOP_GRACE_SECONDS)


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
