"""The SQLite bulk reader: a child process that reads queries on SQLite files through ADBC into Arrow.

A process of its own because ADBC links its own copy of SQLite: two copies of SQLite in one process drop
each other's POSIX locks on the same file (closing one copy's descriptor releases the other's locks; see
https://www.sqlite.org/howtocorrupt.html, 2.2.1 "Multiple copies of SQLite linked into the same
application"), which lets another process reset the WAL index under the first copy's feet (SIGBUS). Between
processes, SQLite's locking is the ordinary, safe kind.

Protocol (monitor.db keeps a small pool of these and talks to them): one request per line on stdin, JSON
{"uri": ..., "sql": ...}; the answer on stdout is a line `ok` followed by the result as an Arrow IPC stream
(which ends itself), or a line `error <message>`. The process ends when stdin closes (its parent is gone).
"""

import json
import sys


def main() -> int:
    import adbc_driver_sqlite.dbapi as adbc  # imported before the first request: that is the warm-up
    import pyarrow as pa

    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        try:
            request = json.loads(line)
            with adbc.connect(request["uri"]) as conn, conn.cursor() as cursor:
                # One batch: column types are inferred from every row (int and text mixed become text)
                # rather than from the first 1,024, whose NULLs would fix a column's type too early.
                cursor.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": "100000000"})
                cursor.execute(request["sql"])
                table = cursor.fetch_arrow_table()
        except Exception as e:  # noqa: BLE001 - every failure goes back to the parent as one line
            message = f"{type(e).__name__}: {e}".replace("\n", " ")
            out.write(f"error {message}\n".encode())
            out.flush()
            continue
        out.write(b"ok\n")
        with pa.ipc.new_stream(out, table.schema) as stream:
            stream.write_table(table)
        out.flush()
        del table
    return 0


if __name__ == "__main__":
    sys.exit(main())
