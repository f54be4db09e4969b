"""The tables of the stores that are not cases (those are ORM rows in ``controller.cases.db``).

Table and column names are those of the SQLite files each store kept before
the state database, so that the one-time import (``controller.state.legacy``)
copies them by name. Migrations create them; these definitions are what the
stores query.
"""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Column, Float, Index, Integer, String, Table, Text

from controller.state.database import Base

metadata = Base.metadata

#: Every alarm, open and closed (the fields of ``rules.alarm_model.Alarm`` but its
#: transitions). Ids are the alarm manager's, so they are not generated here.
alarm = Table(
    "alarm",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("rule", String, nullable=False),
    Column("kind", String, nullable=False),
    Column("device", String, nullable=False),
    Column("device_class", String, nullable=False),
    Column("sub", Integer, nullable=False),
    Column("point", String, nullable=False),
    Column("severity", String, nullable=False),
    Column("level", Integer, nullable=False),
    Column("level_name", String, nullable=False),
    Column("condition", String, nullable=False),
    Column("value", Float),
    Column("limit", Float),
    Column("raised_at", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    Column("count", Integer, nullable=False),
    Column("acked_at", Float),
    Column("acked_by", String),
    Column("cleared_at", Float),
    Column("closed_at", Float),
    Column("shelved_until", Float),
    Column("shelved_by", String),
    Column("suppressed_by", String),
    Column("out_of_service", Boolean, nullable=False),
    Column("chattering", Boolean, nullable=False),
    Column("grid", String, nullable=False),
    Column("road", String, nullable=False),
    Column("district", String, nullable=False),
    Column("cabinet", String, nullable=False),
    Column("circuit", Integer),
    Column("lat", Float, nullable=False),
    Column("lon", Float, nullable=False),
    Column("case", Boolean, nullable=False),
    #: The lease epoch of the leader that judged it (None: a controller not in a pair).
    Column("epoch", Integer),
    Index("alarm_open", "closed_at"),
    Index("alarm_raised", "raised_at"),
)

#: The command audit log: one row per command (or refused attempt).
audit = Table(
    "audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("source", String, nullable=False),
    Column("key_id", String, nullable=False),
    Column("who", String, nullable=False),
    Column("role", String, nullable=False),
    Column("action", String, nullable=False),
    Column("dim", Integer),
    Column("selector", Text, nullable=False),
    Column("target_count", Integer, nullable=False),
    Column("outcome", String, nullable=False),
    Column("reason", Text, nullable=False, server_default=""),
    Column("confirmed", Integer, nullable=False, server_default="0"),
    Column("failed", Integer, nullable=False, server_default="0"),
    Column("finished_at", Float),
    # Text, not JSON: the log is searched for a target with LIKE on this text.
    Column("results", Text, nullable=False, server_default="{}"),
    Index("audit_at", "at"),
    #: The lease epoch of the leader that wrote it (None: a single controller).
    Column("epoch", Integer),
)

#: Manual overrides of the schedule.
override = Table(
    "override",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("selector", Text, nullable=False),
    Column("action", String, nullable=False),
    Column("level", Integer),
    Column("starts_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("reason", Text, nullable=False),
    Column("who", String, nullable=False),
    Column("key_id", String, nullable=False),
    Column("role", String, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("cancelled_at", Float),
    Column("applied", Boolean, nullable=False, server_default="0"),
    Column("ended", Boolean, nullable=False, server_default="0"),
)

#: The last push of each device-mode cabinet's time table, for every node of a pair to show.
time_table_push = Table(
    "time_table_push",
    metadata,
    Column("cabinet", String, primary_key=True),
    Column("at", Float, nullable=False),
    Column("night", String, nullable=False),
    Column("entries", Integer, nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("detail", Text, nullable=False, server_default=""),
)

#: The lamp-pole asset register: the pole as JSON, and the columns it is listed by.
pole = Table(
    "pole",
    metadata,
    Column("pole_id", String, primary_key=True),
    Column("cabinet", String),
    Column("circuit", Integer),
    Column("road", String, nullable=False),
    Column("grid", String, nullable=False),
    Column("body", JSON, nullable=False),
    Index("pole_road", "road"),
    Index("pole_grid", "grid"),
    Index("pole_cabinet", "cabinet", "circuit"),
)

#: API keys: the SHA-256 of each secret, never the secret (``api.keys``).
api_key = Table(
    "api_key",
    metadata,
    Column("id", String, primary_key=True),
    Column("name", String, nullable=False),
    Column("role", String, nullable=False),
    Column("hash", String, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float),
)

#: People's accounts: a scrypt hash per password (``api.users``).
app_user = Table(
    "app_user",
    metadata,
    Column("username", String, primary_key=True),
    Column("name", String, nullable=False),
    Column("role", String, nullable=False),
    Column("hash", String, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("disabled_at", Float),
    Column("failures", Integer, nullable=False, server_default="0"),
    Column("locked_until", Float),
)

#: Open browser sessions: the SHA-256 of each cookie token.
user_session = Table(
    "user_session",
    metadata,
    Column("token_hash", String, primary_key=True),
    Column("username", String, nullable=False),
    Column("csrf", String, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Index("user_session_user", "username"),
)

#: The lease of an active/standby pair: one row, held by the node that leads.
leader_lease = Table(
    "leader_lease",
    metadata,
    Column("name", String, primary_key=True),
    Column("holder", String, nullable=False),
    #: Grows by one at each change of holder: the fencing token.
    Column("epoch", Integer, nullable=False),
    Column("since", Float, nullable=False),
    #: In the database's clock, so the nodes' clocks need not agree.
    Column("expires_at", Float, nullable=False),
    Column("address", String, nullable=False, server_default=""),
)

#: SQLite files of the release before the state database, imported once each.
legacy_import = Table(
    "legacy_import",
    metadata,
    Column("source", String, primary_key=True),
    Column("store", String, nullable=False),
    Column("rows", Integer, nullable=False),
    Column("at", Float, nullable=False),
)
