"""SQL for the database roles, grants and row-level security of the `caas_` schema.

Used by migrations. These functions are part of old migrations' behaviour: add new ones rather
than changing what an existing one emits.

Model: services log in as any user but run as APP_ROLE (offchain.platform.db), which owns no
table; FORCE ROW LEVEL SECURITY makes the owner subject to the policies too. Background workers
that act for every partner switch to WORKER_ROLE for one transaction. Superusers bypass RLS
whatever we do, which is why the services never run statements as the login user.
"""

from __future__ import annotations

APP_ROLE = "caas_app"
WORKER_ROLE = "caas_worker"
ROLES = (APP_ROLE, WORKER_ROLE)

CURRENT_PARTNER_FUNCTION = """
CREATE FUNCTION caas_current_partner() RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    -- NULLIF: once SET LOCAL has run on a connection the setting exists as '' afterwards.
    SELECT NULLIF(current_setting('caas.partner_id', true), '')::uuid
$$
"""


def create_role(role: str) -> str:
    """Roles are cluster-wide: tolerate one that exists, or that another database's migration
    creates at the same moment; then let the migrating user SET ROLE to it."""
    return f"""
DO $$
BEGIN
    BEGIN
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
            CREATE ROLE {role} NOLOGIN;
        END IF;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN
        NULL;
    END;
    BEGIN
        EXECUTE format('GRANT {role} TO %I', current_user);
    EXCEPTION WHEN duplicate_object OR unique_violation OR internal_error THEN
        NULL;
    END;
END $$
"""


def grant_schema_usage() -> str:
    return f"""
DO $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO {", ".join(ROLES)}', current_schema());
END $$
"""


def revoke_schema_usage() -> str:
    return f"""
DO $$
BEGIN
    EXECUTE format('REVOKE USAGE ON SCHEMA %I FROM {", ".join(ROLES)}', current_schema());
END $$
"""


def grant_table(table: str, *, append_only: bool = False) -> str:
    privileges = "SELECT, INSERT" if append_only else "SELECT, INSERT, UPDATE, DELETE"
    return f"GRANT {privileges} ON {table} TO {', '.join(ROLES)}"


def partner_policies(table: str, column: str, *, shared_rows: bool = False) -> list[str]:
    """Partner isolation for APP_ROLE, all rows for WORKER_ROLE.

    shared_rows: rows whose `column` is NULL are platform-wide (system events, system audit
    entries) and visible in every partner scope; INSERT ... RETURNING needs that too.
    """
    match = f"{column} = caas_current_partner()"
    condition = f"({column} IS NULL OR {match})" if shared_rows else f"({match})"
    return [
        f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
        f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY",
        f"CREATE POLICY partner_isolation ON {table} TO {APP_ROLE} USING {condition} WITH CHECK {condition}",
        f"CREATE POLICY worker_all ON {table} TO {WORKER_ROLE} USING (true) WITH CHECK (true)",
    ]


def append_only(table: str) -> list[str]:
    """Reject UPDATE/DELETE/TRUNCATE even from the owner (grants alone do not bind owners)."""
    function = f"{table}_reject_change"
    return [
        f"""
CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '{table} is append-only: % refused', TG_OP;
END $$
""",
        f"CREATE TRIGGER {table}_no_update_delete BEFORE UPDATE OR DELETE ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION {function}()",
        f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()",
    ]


def drop_append_only(table: str) -> str:
    return f"DROP FUNCTION IF EXISTS {table}_reject_change() CASCADE"
