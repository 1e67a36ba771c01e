"""System variables and status counters as the persona's MySQL version reports them."""

from __future__ import annotations

from typing import Any


def system_variables(version: str, modern: bool, facts: dict[str, Any], hostname: str,
                     port: int, tls: bool, server_id: int) -> dict[str, str]:
    """Global values; a session copies them and SET changes its own copy."""
    windows = facts.get("os", "").lower().startswith("win")
    if windows:
        base = "C:\\Program Files\\MySQL\\MySQL Server " + ".".join(version.split(".")[:2])
        datadir = "C:\\ProgramData\\MySQL\\MySQL Server " + ".".join(version.split(".")[:2]) \
            + "\\data\\"
        plugin_dir = base + "\\lib\\plugin\\"
        tmpdir = "C:\\Windows\\TEMP"
        socket = "MySQL"
    else:
        base, datadir, plugin_dir = "/usr/", "/var/lib/mysql/", "/usr/lib/mysql/plugin/"
        tmpdir, socket = "/tmp", "/var/run/mysqld/mysqld.sock"
    charset = "utf8mb4" if modern else "latin1"
    collation = "utf8mb4_0900_ai_ci" if modern else "latin1_swedish_ci"
    v: dict[str, str] = {
        "auto_increment_increment": "1", "auto_increment_offset": "1", "autocommit": "ON",
        "back_log": "151" if modern else "50", "basedir": base,
        "bind_address": "*" if modern else "",
        "character_set_client": charset, "character_set_connection": charset,
        "character_set_database": charset, "character_set_filesystem": "binary",
        "character_set_results": charset, "character_set_server": charset,
        "character_set_system": "utf8mb3" if modern else "utf8",
        "collation_connection": collation, "collation_database": collation,
        "collation_server": collation, "connect_timeout": "10", "datadir": datadir,
        "default_storage_engine": "InnoDB", "general_log": "OFF", "have_openssl":
        "YES" if tls else "DISABLED", "have_ssl": "YES" if tls else "DISABLED",
        "have_symlink": "DISABLED" if modern else "YES", "hostname": hostname,
        "init_connect": "", "innodb_buffer_pool_size": "134217728",
        "innodb_version": version, "interactive_timeout": "28800",
        "license": "GPL", "local_infile": "OFF" if modern else "ON", "log_bin":
        "ON" if modern else "OFF", "log_error": (datadir + hostname + ".err") if windows
        else "/var/log/mysql/error.log", "lower_case_table_names": "1" if windows else "0",
        "max_allowed_packet": "67108864" if modern else "1048576",
        "max_connections": "151", "net_buffer_length": "16384", "net_read_timeout": "30",
        "net_write_timeout": "60", "performance_schema": "ON" if modern else "OFF",
        "pid_file": (datadir + hostname + ".pid") if windows else "/var/run/mysqld/mysqld.pid",
        "plugin_dir": plugin_dir, "port": str(port), "protocol_version": "10",
        "read_only": "OFF", "secure_file_priv": ("" if not modern else
                                                 ("C:\\ProgramData\\MySQL\\MySQL Server 8.0\\"
                                                  "Uploads\\" if windows
                                                  else "/var/lib/mysql-files/")),
        "server_id": str(server_id), "skip_name_resolve": "OFF", "skip_networking": "OFF",
        "socket": socket, "sql_mode": ("ONLY_FULL_GROUP_BY,STRICT_TRANS_TABLES,NO_ZERO_IN_DATE,"
                                       "NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,"
                                       "NO_ENGINE_SUBSTITUTION") if modern
        else "STRICT_TRANS_TABLES,NO_AUTO_CREATE_USER,NO_ENGINE_SUBSTITUTION",
        "sql_select_limit": "18446744073709551615", "system_time_zone":
        "Coordinated Universal Time" if windows else "UTC",  # Windows' tzname is the long one
        "time_zone": "SYSTEM", "tmpdir": tmpdir, "version": version,
        "version_comment": facts.get("version_comment", "MySQL Community Server (GPL)"),
        "version_compile_machine": "x86_64", "version_compile_os": facts.get("os", "Linux"),
        "wait_timeout": "28800", "warning_count": "0", "error_count": "0",
    }
    if modern:
        v.update({
            "default_authentication_plugin": "caching_sha2_password",
            "transaction_isolation": "REPEATABLE-READ", "transaction_read_only": "OFF",
            "require_secure_transport": "OFF", "mysqlx_port": "33060",
            "admin_address": "", "caching_sha2_password_auto_generate_rsa_keys": "ON",
            "tls_version": "TLSv1.2,TLSv1.3", "default_collation_for_utf8mb4":
            "utf8mb4_0900_ai_ci", "session_track_system_variables":
            "time_zone,autocommit,character_set_client,character_set_results,"
            "character_set_connection",
            "sql_require_primary_key": "OFF", "event_scheduler": "ON",
        })
    else:
        v.update({
            "tx_isolation": "REPEATABLE-READ", "tx_read_only": "OFF",
            "query_cache_size": "0", "query_cache_type": "ON", "old_passwords": "0",
            "storage_engine": "InnoDB", "event_scheduler": "OFF",
            "have_innodb": "YES", "secure_auth": "OFF",
        })
    return dict(sorted(v.items()))


def status(uptime: int, threads: int, questions: int, thread_id: int) -> dict[str, str]:
    return {
        "Aborted_clients": "0", "Aborted_connects": str(max(thread_id % 97, 1)),
        "Bytes_received": str(questions * 61), "Bytes_sent": str(questions * 311),
        "Connections": str(thread_id), "Open_tables": "64", "Opened_tables": "137",
        "Queries": str(questions + thread_id * 3), "Questions": str(questions),
        "Slow_queries": "0", "Threads_cached": "1", "Threads_connected": str(threads),
        "Threads_created": "4", "Threads_running": "1", "Uptime": str(uptime),
        "Uptime_since_flush_status": str(uptime),
    }
