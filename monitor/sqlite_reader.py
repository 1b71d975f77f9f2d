"""Run as a child process by monitor.db.read_bulk: one query on one SQLite file, read through ADBC into Arrow,
written to stdout as an Arrow IPC stream.

A process of its own because ADBC links its own copy of SQLite: two copies of SQLite in one process break
each other's POSIX locks on the same file (closing one copy's descriptor drops the other's locks; see
https://www.sqlite.org/howtocorrupt.html, "Multiple copies of SQLite linked into the same application"),
which lets another process reset the WAL index under the first copy's feet. Between processes, SQLite's
locking is the ordinary, safe kind.

Usage: python monitor/sqlite_reader.py URI < SQL
"""

import sys


def main() -> int:
    import adbc_driver_sqlite.dbapi as adbc
    import pyarrow as pa

    uri, sql = sys.argv[1], sys.stdin.read()
    with adbc.connect(uri) as conn, conn.cursor() as cursor:
        # One batch: column types are inferred from every row (int and text mixed become text) rather than
        # from the first 1,024, whose NULLs would fix a column's type too early. (The driver's bound is an int.)
        cursor.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": "100000000"})
        cursor.execute(sql)
        table = cursor.fetch_arrow_table()
    with pa.ipc.new_stream(sys.stdout.buffer, table.schema) as out:
        out.write_table(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
