"""What the backup engine asks PostgreSQL about its databases: every user table's row count
(the manifest's, and those a restore or deep verify checks against it), whether a database
exists, and dropping one.
"""

from __future__ import annotations

from backups.executor import MAINTENANCE_DATABASE, Executor
from backups.process import PsqlSession, psql_session, quote_ident, quote_literal


def table_list_sql() -> str:
    return (
        "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1"
    )


def count_rows(session: PsqlSession, tables: list[str]) -> dict[str, int]:
    if not tables:
        return {}
    sql = " UNION ALL ".join(
        # quoted by quote_ident in the catalog query; psql has no bind parameters
        f"SELECT {quote_literal(table)}, count(*) FROM {table}"  # noqa: S608
        for table in tables
    )
    return {name: int(count) for name, count in session.query(sql)}


def database_exists(executor: Executor, name: str) -> bool:
    with psql_session(executor, MAINTENANCE_DATABASE) as session:
        rows = session.query(
            f"SELECT 1 FROM pg_database WHERE datname = {quote_literal(name)}"  # noqa: S608
        )
    return bool(rows)


def drop_database(executor: Executor, name: str) -> None:
    with psql_session(executor, MAINTENANCE_DATABASE) as session:
        session.query(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")


def row_counts(executor: Executor, dbname: str) -> dict[str, int]:
    with psql_session(executor, dbname) as session:
        return count_rows(session, [row[0] for row in session.query(table_list_sql())])


def count_mismatches(expected: dict[str, int], actual: dict[str, int]) -> list[str]:
    problems = []
    for table in sorted(expected.keys() | actual.keys()):
        want, got = expected.get(table), actual.get(table)
        if want != got:
            problems.append(
                f"{table}: {got if got is not None else 'missing'} rows, "
                f"expected {want if want is not None else 'none'}"
            )
    return problems
