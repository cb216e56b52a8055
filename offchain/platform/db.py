"""PostgreSQL access: async engine, sessions, and the partner scope that row-level security reads.

Every connection runs as the application role (`caas_app` by default, set in the startup packet),
which owns no table: the RLS policies of migration 0001 therefore apply to everything the
services do. Two scopes open on top of that:

- `partner_session(pid)`: sets `caas.partner_id` for the transaction; partner-owned tables show
  only that partner's rows (and none when no partner is set).
- `worker_session()`: `SET LOCAL ROLE caas_worker` for trusted background work that acts for all
  partners (indexer, sender, outbox relay); the role is reset when the transaction ends.

Hot partner reads skip both: `fetch_one` runs one statement on plain asyncpg connections, through a SQL
function that sets the partner scope itself (migration 0009), so the read is one round trip and
row-level security still decides what it sees.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from offchain.platform.settings import DatabaseSettings

_DRIVERLESS = {"postgres", "postgresql"}


def _with_driver(url: str, driver: str) -> URL:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend not in _DRIVERLESS:
        raise ValueError(f"DATABASE_URL must be a PostgreSQL URL, got scheme {backend!r}")
    return parsed.set(drivername=f"postgresql+{driver}")


def async_url(url: str) -> URL:
    """`postgresql://...` (what people and pgserver write) -> the asyncpg dialect."""
    return _with_driver(url, "asyncpg")


def sync_url(url: str) -> URL:
    """The psycopg2 URL alembic runs migrations with."""
    return _with_driver(url, "psycopg2")


def redacted(url: str | URL) -> str:
    return make_url(url).render_as_string(hide_password=True) if url else ""


def _server_settings(settings: DatabaseSettings, application_name: str, role: str | None) -> dict[str, str]:
    server_settings = {
        "application_name": application_name,
        "statement_timeout": str(settings.statement_timeout_ms),
    }
    role = settings.app_role if role is None else role
    if role:
        # Set at connection start-up: RESET ALL / DISCARD ALL return to it, never to the login role.
        server_settings["role"] = role
    return server_settings


def create_engine(
    settings: DatabaseSettings, *, application_name: str = "caas", role: str | None = None
) -> AsyncEngine:
    if not settings.url:
        raise ValueError("DATABASE_URL is not set")
    server_settings = _server_settings(settings, application_name, role)
    return create_async_engine(
        async_url(settings.url),
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_pre_ping=settings.pool_pre_ping,
        pool_recycle=settings.pool_recycle_s,
        connect_args={"timeout": settings.connect_timeout_s, "server_settings": server_settings},
    )


# A pooled read connection that died with the server (restart, failover, a terminated backend)
# fails before its statement ran: a read is safe to run again once on a fresh connection. A
# backend terminated while the connection sat idle leaves asyncpg's protocol mid-message, which
# it reports as an InternalClientError on the next statement.
_CONNECTION_LOST = (
    asyncpg.InternalClientError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    ConnectionError,
)


class ReadConnections:
    """Connections for single statements outside any transaction (the partner reads), handed
    out in arrival order.

    Not asyncpg's Pool: its acquire and release bookkeeping (holders, reset hooks, timeouts) was
    ~8 % of a partner read's CPU, and its queue let a newcomer take a connection just released to
    a woken waiter, which then queued again at the back (under load that starved a few requests
    for hundreds of ms: the read path's p99). Here a semaphore as wide as the set admits callers
    (FIFO, no barging since Python 3.11) and each takes the connection idle longest.

    Such statements leave no session state behind (a partner scope is transaction-local), so a
    connection goes back as it is. One the server dropped is replaced and the statement run again
    once; one whose statement was interrupted (cancelled caller) is closed, its state unknown.
    Connections idle longer than `max_idle_s` are replaced when next taken.
    """

    def __init__(
        self, connect: Callable[[], Awaitable[asyncpg.Connection]], *, size: int, max_idle_s: float
    ) -> None:
        self._connect = connect
        self._slots = asyncio.Semaphore(size)
        self._idle: deque[tuple[asyncpg.Connection, float]] = deque()
        self._max_idle_s = max_idle_s
        self._open = 0
        self._closed = False

    @property
    def open_connections(self) -> int:
        return self._open

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        async with self._slots:
            for attempt in (1, 2):
                connection = await self._take()
                try:
                    row = await connection.fetchrow(query, *args)
                except _CONNECTION_LOST:
                    self._discard(connection)
                    if attempt == 2:
                        raise
                    continue
                except asyncpg.PostgresError:
                    self._give_back(connection)  # the statement failed, not the connection
                    raise
                except BaseException:
                    self._discard(connection)  # interrupted mid-statement
                    raise
                self._give_back(connection)
                return row
        raise AssertionError("unreachable")

    async def _take(self) -> asyncpg.Connection:
        if self._closed:
            raise asyncpg.InterfaceError("the read connections are closed")
        now = time.monotonic()
        while self._idle:
            connection, since = self._idle.popleft()
            if now - since < self._max_idle_s and not connection.is_closed():
                return connection
            self._discard(connection)
        connection = await self._connect()
        self._open += 1
        return connection

    def _give_back(self, connection: asyncpg.Connection) -> None:
        if self._closed or connection.is_closed():
            self._discard(connection)
        else:
            self._idle.append((connection, time.monotonic()))

    def _discard(self, connection: asyncpg.Connection) -> None:
        self._open -= 1
        connection.terminate()

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, deque()
        self._open -= len(idle)
        await asyncio.gather(*(connection.close(timeout=5) for connection, _ in idle), return_exceptions=True)


@dataclass
class Database:
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    worker_role: str = "caas_worker"
    settings: DatabaseSettings | None = None
    application_name: str = "caas"
    _reads: ReadConnections | None = field(default=None, init=False, repr=False)

    @classmethod
    def from_settings(cls, settings: DatabaseSettings, *, application_name: str = "caas") -> Database:
        engine = create_engine(settings, application_name=application_name)
        return cls(
            engine=engine,
            sessionmaker=async_sessionmaker(engine, expire_on_commit=False),
            worker_role=settings.worker_role,
            settings=settings,
            application_name=application_name,
        )

    async def fetch_one(self, query: str, *args: Any) -> asyncpg.Record | None:
        """One statement outside any transaction, as the application role, in one round trip.

        For partner reads through a scoping function such as `caas_partner_loan` (migration
        0009), on a few connections of their own (ReadConnections, `read_connections`).
        """
        return await (self._reads or self._open_reads()).fetchrow(query, *args)

    def _open_reads(self) -> ReadConnections:
        settings = self.settings
        if settings is None or not settings.url:
            raise ValueError("DATABASE_URL is not set")
        dsn = make_url(settings.url).set(drivername="postgresql").render_as_string(hide_password=False)
        server_settings = _server_settings(settings, self.application_name, None)

        def connect() -> Awaitable[asyncpg.Connection]:
            return asyncpg.connect(dsn, timeout=settings.connect_timeout_s, server_settings=server_settings)

        self._reads = ReadConnections(
            connect, size=settings.read_connections, max_idle_s=settings.pool_recycle_s
        )
        return self._reads

    @asynccontextmanager
    async def partner_session(self, partner_id: uuid.UUID | str) -> AsyncIterator[AsyncSession]:
        """A transaction that sees only `partner_id`'s rows; commits on success."""
        pid = str(uuid.UUID(str(partner_id)))  # reject anything that is not a UUID
        async with self._transaction(lambda session: set_partner(session, pid)) as session:
            yield session

    @asynccontextmanager
    async def worker_session(self) -> AsyncIterator[AsyncSession]:
        """A transaction for trusted background work across partners; commits on success."""
        # worker_role is validated as a plain identifier by DatabaseSettings.
        statement = text(f"SET LOCAL ROLE {self.worker_role}")
        async with self._transaction(lambda session: session.execute(statement)) as session:
            yield session

    @asynccontextmanager
    async def _transaction(
        self, first: Callable[[AsyncSession], Awaitable[Any]]
    ) -> AsyncIterator[AsyncSession]:
        """Begin, run the scoping statement, hand the session over; commit on success.

        Pooled connections are not pinged before use (a round trip on every transaction): one
        that died with the server (a restart, a failover) fails on the scoping statement instead,
        which invalidates the pool; nothing has run yet, so that one statement is retried once on
        a fresh connection and the caller never sees the restart.
        """
        for attempt in (1, 2):
            session = self.sessionmaker()
            try:
                await session.begin()
                await first(session)
                break
            except DBAPIError as error:
                await session.close()
                if attempt == 2 or not error.connection_invalidated:
                    raise
            except BaseException:
                await session.close()
                raise
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise
        finally:
            await session.close()

    async def dispose(self) -> None:
        if self._reads is not None:
            reads, self._reads = self._reads, None
            await reads.close()
        await self.engine.dispose()


_SET_PARTNER = text("SELECT set_config('caas.partner_id', :partner_id, true)")


async def set_partner(session: AsyncSession, partner_id: str | uuid.UUID) -> None:
    """Scope the current transaction to a partner (`SET LOCAL caas.partner_id`)."""
    # A textual statement: no ORM compile on the hot path of every partner request.
    await session.execute(_SET_PARTNER, {"partner_id": str(partner_id)})
