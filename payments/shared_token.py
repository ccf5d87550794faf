"""One Daraja OAuth token for every process on a PostgreSQL database.

Daraja's FAQ says each new token invalidates the previous one (daraja.md §1.2-1.3): N
processes that each fetch their own keep invalidating one another's (issue 10 measured
about half the STK queries refused with ``404.001.03``). So the token lives in the
``daraja_tokens`` row of its Daraja app, and each process keeps a copy in memory:

- ``get()``: the copy in memory while it is fresh; else the stored row, when it is fresh
  and is not the token Daraja just refused; else a refresh.
- A refresh is one transaction holding a PostgreSQL advisory lock for the app, so the
  processes refresh one at a time. It reads the row again (another process may have
  refreshed while this one waited) and only when it is still stale or refused calls
  Daraja and writes the new token. N processes refused at once make one OAuth call: the
  first to get the lock fetches; the others find a token other than the refused one.
- ``invalidate(value)``: Daraja refused ``value``; it is not used again.

``expires_at`` in the row is when the processes stop using the token (its real expiry
less the refresh margin), so that every process agrees on when it is due.

On SQLite (one process by design) ``TokenCache`` keeps the token in memory instead, with
no database traffic: see ``token_provider``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypeGuard

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from payments.errors import DarajaUnavailable
from payments.token_cache import REFRESH_MARGIN_SECONDS, TokenCache
from storage.engine import Database
from storage.schema import daraja_tokens
from storage.sealing import CannotUnseal

log = logging.getLogger(__name__)

Fetch = Callable[[], Awaitable[tuple[str, float]]]  # (token, lifetime in seconds)
LOCK_NAMESPACE = "daraja-token:"


class AccessTokens(Protocol):
    async def get(self) -> str: ...

    def invalidate(self, value: str) -> None: ...


def token_provider(
    fetch: Fetch, database: Database | None, app: str, *, lock_wait_seconds: float
) -> AccessTokens:
    """Shared through the database on PostgreSQL; in memory without one or on SQLite."""
    if database is None or database.is_sqlite:
        return TokenCache(fetch)
    return SharedToken(database, app, fetch, lock_wait_seconds=lock_wait_seconds)


def app_digest(base_url: str, consumer_key: str) -> str:
    """Which Daraja app a token belongs to (environment and key), naming no credential."""
    return hashlib.sha256(f"{base_url}\n{consumer_key}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class StoredToken:
    value: str
    use_until: datetime  # aware UTC


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SharedToken:
    def __init__(
        self,
        database: Database,
        app: str,
        fetch: Fetch,
        now: Callable[[], datetime] = _utc_now,
        *,
        lock_wait_seconds: float = 30.0,
    ) -> None:
        """``app``: see ``app_digest``. ``lock_wait_seconds``: how long to wait for
        another process's refresh (longer than its OAuth request may take)."""
        self._database = database
        self._app = app
        self._fetch = fetch
        self._now = now
        self._lock_wait = f"{max(1, int(lock_wait_seconds * 1000))}ms"
        self._token: StoredToken | None = None
        self._refused: str | None = None
        self._lock = asyncio.Lock()  # one reader or refresher per process at a time

    async def get(self) -> str:
        token = self._token
        if self._usable(token):
            return token.value
        async with self._lock:
            token = self._token
            if self._usable(token):
                return token.value  # another task of this process got it meanwhile
            try:
                token = await self._stored()
                if not self._usable(token):
                    token = await self._refresh()
            except (SQLAlchemyError, OSError) as exc:
                if self._usable(self._token):
                    # Fetched, then not stored: Daraja has already ended the old token, so
                    # this one is used; the next refresh stores a token for everyone.
                    log.warning("a new Daraja token could not be stored (%s)", type(exc).__name__)
                    return self._token.value
                # Nothing was sent to Daraja: the caller may try again later.
                raise DarajaUnavailable(
                    f"could not read the shared Daraja token ({type(exc).__name__})"
                ) from exc
            self._token = token
            return token.value

    def invalidate(self, value: str) -> None:
        """Daraja refused ``value``: neither the memory nor the stored row may give it again."""
        self._refused = value
        if self._token is not None and self._token.value == value:
            self._token = None

    def _usable(self, token: StoredToken | None) -> TypeGuard[StoredToken]:
        return token is not None and token.value != self._refused and self._now() < token.use_until

    async def _stored(self) -> StoredToken | None:
        # No lock: most of the time another process has already stored a good token.
        async with self._database.engine.connect() as conn:
            return await self._read(conn)

    async def _refresh(self) -> StoredToken:
        # The advisory lock's transaction spans the OAuth request, so the other processes
        # wait for this token instead of fetching (and invalidating) their own. Hence the
        # async engine used directly: ``Database.transaction`` runs a blocking function,
        # which cannot await the request. A refresh is rare (hourly, or after a refusal),
        # so holding one pooled connection for one HTTP round trip is acceptable.
        async with self._database.engine.begin() as conn:
            await conn.execute(select(func.set_config("lock_timeout", self._lock_wait, True)))
            key = func.hashtextextended(LOCK_NAMESPACE + self._app, 0)
            await conn.execute(select(func.pg_advisory_xact_lock(key)))
            token = await self._read(conn)
            if self._usable(token):
                return token  # refreshed by another process while we waited
            value, lifetime = await self._fetch()
            margin = min(REFRESH_MARGIN_SECONDS, lifetime / 2)
            token = StoredToken(value, self._now() + timedelta(seconds=lifetime - margin))
            self._token = token  # kept even if storing it fails (see get)
            upsert = insert(daraja_tokens).values(
                app=self._app, token=token.value, expires_at=token.use_until
            )
            await conn.execute(
                upsert.on_conflict_do_update(
                    index_elements=[daraja_tokens.c.app],
                    set_={"token": upsert.excluded.token, "expires_at": upsert.excluded.expires_at},
                )
            )
            return token

    async def _read(self, conn: AsyncConnection) -> StoredToken | None:
        query = select(daraja_tokens.c.token, daraja_tokens.c.expires_at).where(
            daraja_tokens.c.app == self._app
        )
        try:
            row = (await conn.execute(query)).first()
        except CannotUnseal:
            return None  # sealed with a retired data key: fetch a new one over it
        return None if row is None else StoredToken(row.token, row.expires_at)
