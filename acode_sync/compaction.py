"""Server-side compaction of the change log (``acode-sync server compact``).

The server does the work (``acode_sync.compact_owner``, server migration 0005):
per owner, change-log rows superseded by a later change of the same entity go,
their idempotency keys are kept in ``acode_sync.applied_keys`` for the retention
window so that a resend of an old batch is still a duplicate, and older kept
keys are dropped. Here: one transaction per owner, so a big server is never
held in one long transaction and each statement stays on one owner's rows
(one shard on Citus). Afterwards the three tables are analyzed: the planner's
statistics then know every owner (server migration 0006 and docs/SCALING.md:
an owner the statistics have never seen can get plans that read all its rows).
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from acode_sync import remote
from acode_sync.errors import NeedsAdmin, SetupError

DEFAULT_KEEP_KEYS_DAYS = 30


@dataclass(frozen=True)
class OwnerCompaction:
    """What compaction did to one owner's log."""

    owner: str
    removed: int  # change-log rows removed
    kept_rows: int  # change-log rows left
    keys_kept: int  # keys of removed rows kept for the window
    keys_dropped: int  # kept keys older than the window, dropped


def compact_log(
    conninfo: str,
    *,
    keep_keys_days: int = DEFAULT_KEEP_KEYS_DAYS,
    setting: str | None = None,
) -> list[OwnerCompaction]:
    """Compact every owner's change log (run by an admin role)."""
    try:
        return _compact(conninfo, keep_keys_days)
    except SetupError as exc:
        exc.setting = setting
        raise


def _compact(conninfo: str, keep_keys_days: int) -> list[OwnerCompaction]:
    done = []
    with remote.connect(conninfo, autocommit=True, prepare_threshold=None) as conn:
        try:
            # Asked first: a device role sees no other owner to be refused on.
            allowed = conn.execute(
                "SELECT to_regprocedure('acode_sync.compact_owner(text, interval)') IS NULL "
                "OR has_function_privilege('acode_sync.compact_owner(text, interval)', 'EXECUTE')"
            ).fetchone()
            if not (allowed and allowed[0]):
                raise psycopg.errors.InsufficientPrivilege(
                    "permission denied for function compact_owner"
                )
            owners = [
                row[0]
                for row in conn.execute(
                    "SELECT owner_id FROM acode_sync.owner_clock ORDER BY owner_id"
                ).fetchall()
            ]
            for owner in owners:
                row = conn.execute(
                    "SELECT owner_id, removed, kept_rows, keys_kept, keys_dropped "
                    "FROM acode_sync.compact_owner(%s, make_interval(days => %s))",
                    (owner, keep_keys_days),
                ).fetchone()
                assert row is not None  # compact_owner returns one row
                done.append(OwnerCompaction(*row))
            conn.execute("ANALYZE acode_sync.changes, acode_sync.chats, acode_sync.messages")
        except psycopg.errors.InsufficientPrivilege as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "permission denied"
            raise NeedsAdmin(
                f"server compact needs an admin role (one that owns the acode_sync schema "
                f"in database {conn.info.dbname}); it ran as role {conn.info.user} ({first})",
                "run it with an admin's URL: ACODE_SYNC_REMOTE_URL=postgresql://ADMIN@HOST:PORT/DB"
                " acode-sync server compact",
            ) from None
        except (psycopg.errors.UndefinedFunction, psycopg.errors.UndefinedTable) as exc:
            first = str(exc).strip().splitlines()[0]
            raise SetupError(
                f"the server in database {conn.info.dbname} has no compaction ({first})",
                "run 'acode-sync migrate --remote' on it with an admin role",
            ) from None
    return done
