"""MySQL's error numbers, SQLSTATEs and message texts, as the server words them."""

from __future__ import annotations


class SqlError(Exception):
    """An error reply: number, SQLSTATE and the exact message."""

    def __init__(self, code: int, state: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.state = state
        self.message = message


def access_denied(user: str, host: str, password_used: bool) -> SqlError:
    using = "YES" if password_used else "NO"
    return SqlError(1045, "28000",
                    f"Access denied for user '{user}'@'{host}' (using password: {using})")


def syntax(near: str, line: int = 1) -> SqlError:
    near = near[:80]
    return SqlError(1064, "42000",
                    "You have an error in your SQL syntax; check the manual that corresponds to "
                    "your MySQL server version for the right syntax to use near "
                    f"'{near}' at line {line}")


def empty_query() -> SqlError:
    return SqlError(1065, "42000", "Query was empty")


def no_table(db: str, table: str) -> SqlError:
    return SqlError(1146, "42S02", f"Table '{db}.{table}' doesn't exist")


def unknown_db(db: str) -> SqlError:
    return SqlError(1049, "42000", f"Unknown database '{db}'")


def no_db() -> SqlError:
    return SqlError(1046, "3D000", "No database selected")


def db_denied(user: str, host: str, db: str) -> SqlError:
    return SqlError(1044, "42000", f"Access denied for user '{user}'@'{host}' to database '{db}'")


def table_denied(command: str, user: str, host: str, table: str) -> SqlError:
    return SqlError(1142, "42000",
                    f"{command} command denied to user '{user}'@'{host}' for table '{table}'")


def unknown_column(column: str, where: str = "field list") -> SqlError:
    return SqlError(1054, "42S22", f"Unknown column '{column}' in '{where}'")


def table_exists(table: str) -> SqlError:
    return SqlError(1050, "42S01", f"Table '{table}' already exists")


def db_exists(db: str) -> SqlError:
    return SqlError(1007, "HY000", f"Can't create database '{db}'; database exists")


def no_function(db: str, name: str) -> SqlError:
    return SqlError(1305, "42000", f"FUNCTION {db}.{name} does not exist")


def table_full(table: str) -> SqlError:
    return SqlError(1114, "HY000", f"The table '{table}' is full")


def interrupted(modern: bool) -> SqlError:
    if modern:
        return SqlError(3024, "HY000", "Query execution was interrupted, maximum statement "
                                       "execution time exceeded")
    return SqlError(1317, "70100", "Query execution was interrupted")


def file_exists(path: str) -> SqlError:
    return SqlError(1086, "HY000", f"File '{path}' already exists")


def unknown_command() -> SqlError:
    return SqlError(1047, "08S01", "Unknown command")


def unknown_stmt(stmt_id: int, where: str) -> SqlError:
    return SqlError(1243, "HY000",
                    f"Unknown prepared statement handler ({stmt_id}) given to {where}")


def wrong_args(where: str) -> SqlError:
    return SqlError(1210, "HY000", f"Incorrect arguments to {where}")


def unknown_variable(name: str) -> SqlError:
    return SqlError(1193, "HY000", f"Unknown system variable '{name}'")


def local_infile(modern: bool) -> SqlError:
    if modern:
        return SqlError(3948, "42000", "Loading local data is disabled; this must be enabled "
                                       "on both the client and server sides")
    return SqlError(1148, "42000", "The used command is not allowed with this MySQL version")


def privilege(names: str) -> SqlError:
    return SqlError(1227, "42000", "Access denied; you need (at least one of) the "
                                   f"{names} privilege(s) for this operation")


def udf_missing(soname: str, modern: bool) -> SqlError:
    detail = f"{soname}: cannot open shared object file: No such file or directory"
    if not modern:
        detail = "The specified module could not be found."
    return SqlError(1126, "HY000", f"Can't open shared library '{soname}' (errno: 2 {detail})")


def packet_too_large() -> SqlError:
    return SqlError(1153, "08S01", "Got a packet bigger than 'max_allowed_packet' bytes")


def bad_handshake() -> SqlError:
    return SqlError(1043, "08S01", "Bad handshake")


def uncompress() -> SqlError:
    return SqlError(1157, "08S01", "Couldn't uncompress communication packet")


def no_cursor(stmt_id: int) -> SqlError:
    return SqlError(1421, "HY000", f"The statement ({stmt_id}) has no open cursor.")
