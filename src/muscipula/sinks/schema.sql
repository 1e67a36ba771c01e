-- logsql: dionaea's table and column names, so existing queries keep working.
-- Every row's `connection` is the attack's connections.connection.
CREATE TABLE IF NOT EXISTS connections (
    connection INTEGER PRIMARY KEY,
    connection_type TEXT,
    connection_transport TEXT,
    connection_protocol TEXT,
    connection_timestamp INTEGER,
    connection_root INTEGER,
    connection_parent INTEGER,
    local_host TEXT,
    local_port INTEGER,
    remote_host TEXT,
    remote_hostname TEXT,
    remote_port INTEGER
);
CREATE TRIGGER IF NOT EXISTS connections_INSERT_update_connection_root_trg
    AFTER INSERT ON connections FOR EACH ROW WHEN new.connection_root IS NULL
    BEGIN UPDATE connections SET connection_root = connection WHERE connection = new.connection; END;
CREATE INDEX IF NOT EXISTS connections_type_idx ON connections (connection_type);
CREATE INDEX IF NOT EXISTS connections_timestamp_idx ON connections (connection_timestamp);
CREATE INDEX IF NOT EXISTS connections_root_idx ON connections (connection_root);
CREATE INDEX IF NOT EXISTS connections_parent_idx ON connections (connection_parent);
CREATE INDEX IF NOT EXISTS connections_local_host_idx ON connections (local_host);
CREATE INDEX IF NOT EXISTS connections_local_port_idx ON connections (local_port);
CREATE INDEX IF NOT EXISTS connections_remote_host_idx ON connections (remote_host);

CREATE TABLE IF NOT EXISTS dcerpcbinds (
    dcerpcbind INTEGER PRIMARY KEY, connection INTEGER,
    dcerpcbind_uuid TEXT, dcerpcbind_transfersyntax TEXT);
CREATE INDEX IF NOT EXISTS dcerpcbinds_connection_idx ON dcerpcbinds (connection);
CREATE INDEX IF NOT EXISTS dcerpcbinds_uuid_idx ON dcerpcbinds (dcerpcbind_uuid);

CREATE TABLE IF NOT EXISTS dcerpcrequests (
    dcerpcrequest INTEGER PRIMARY KEY, connection INTEGER,
    dcerpcrequest_uuid TEXT, dcerpcrequest_opnum INTEGER);
CREATE INDEX IF NOT EXISTS dcerpcrequests_connection_idx ON dcerpcrequests (connection);
CREATE INDEX IF NOT EXISTS dcerpcrequests_uuid_idx ON dcerpcrequests (dcerpcrequest_uuid);
CREATE INDEX IF NOT EXISTS dcerpcrequests_opnum_idx ON dcerpcrequests (dcerpcrequest_opnum);

CREATE TABLE IF NOT EXISTS dcerpcservices (
    dcerpcservice INTEGER PRIMARY KEY, dcerpcservice_uuid TEXT UNIQUE, dcerpcservice_name TEXT);

CREATE TABLE IF NOT EXISTS dcerpcserviceops (
    dcerpcserviceop INTEGER PRIMARY KEY, dcerpcservice INTEGER, dcerpcserviceop_opnum INTEGER,
    dcerpcserviceop_name TEXT, dcerpcserviceop_vuln TEXT,
    UNIQUE (dcerpcservice, dcerpcserviceop_opnum));

CREATE TABLE IF NOT EXISTS emu_profiles (
    emu_profile INTEGER PRIMARY KEY, connection INTEGER, emu_profile_json TEXT);
CREATE INDEX IF NOT EXISTS emu_profiles_connection_idx ON emu_profiles (connection);

-- "emu_serivce" is dionaea's spelling; queries written for it expect it.
CREATE TABLE IF NOT EXISTS emu_services (
    emu_serivce INTEGER PRIMARY KEY, connection INTEGER, emu_service_url TEXT);
CREATE INDEX IF NOT EXISTS emu_services_connection_idx ON emu_services (connection);
-- ours: command lines typed into a shell emulated shellcode opened (capture/shellsession)
CREATE TABLE IF NOT EXISTS emu_shell_commands (
    emu_shell_command INTEGER PRIMARY KEY,
    connection INTEGER,
    emu_shell_command_url TEXT,
    emu_shell_command_line TEXT
);
CREATE INDEX IF NOT EXISTS emu_shell_commands_connection_idx ON emu_shell_commands (connection);

CREATE TABLE IF NOT EXISTS offers (
    offer INTEGER PRIMARY KEY, connection INTEGER, offer_url TEXT);
CREATE INDEX IF NOT EXISTS offers_connection_idx ON offers (connection);
CREATE INDEX IF NOT EXISTS offers_url_idx ON offers (offer_url);

CREATE TABLE IF NOT EXISTS downloads (
    download INTEGER PRIMARY KEY, connection INTEGER, download_url TEXT, download_md5_hash TEXT);
CREATE INDEX IF NOT EXISTS downloads_connection_idx ON downloads (connection);
CREATE INDEX IF NOT EXISTS downloads_url_idx ON downloads (download_url);
CREATE INDEX IF NOT EXISTS downloads_md5_hash_idx ON downloads (download_md5_hash);

CREATE TABLE IF NOT EXISTS resolves (
    resolve INTEGER PRIMARY KEY, connection INTEGER, resolve_hostname TEXT,
    resolve_type TEXT, resolve_result TEXT);

CREATE TABLE IF NOT EXISTS p0fs (
    p0f INTEGER PRIMARY KEY, connection INTEGER, p0f_genre TEXT, p0f_link TEXT,
    p0f_detail TEXT, p0f_uptime INTEGER, p0f_tos TEXT, p0f_dist INTEGER, p0f_nat INTEGER,
    p0f_fw INTEGER);
CREATE INDEX IF NOT EXISTS p0fs_connection_idx ON p0fs (connection);

CREATE TABLE IF NOT EXISTS logins (
    login INTEGER PRIMARY KEY, connection INTEGER, login_username TEXT, login_password TEXT);
CREATE INDEX IF NOT EXISTS logins_connection_idx ON logins (connection);
CREATE INDEX IF NOT EXISTS logins_username_idx ON logins (login_username);
CREATE INDEX IF NOT EXISTS logins_password_idx ON logins (login_password);

CREATE TABLE IF NOT EXISTS mssql_fingerprints (
    mssql_fingerprint INTEGER PRIMARY KEY, connection INTEGER,
    mssql_fingerprint_hostname TEXT, mssql_fingerprint_appname TEXT,
    mssql_fingerprint_cltintname TEXT);
CREATE INDEX IF NOT EXISTS mssql_fingerprints_connection_idx ON mssql_fingerprints (connection);

CREATE TABLE IF NOT EXISTS mssql_commands (
    mssql_command INTEGER PRIMARY KEY, connection INTEGER,
    mssql_command_status TEXT, mssql_command_cmd TEXT);
CREATE INDEX IF NOT EXISTS mssql_commands_connection_idx ON mssql_commands (connection);

CREATE TABLE IF NOT EXISTS virustotals (
    virustotal INTEGER PRIMARY KEY, virustotal_md5_hash TEXT NOT NULL,
    virustotal_timestamp INTEGER NOT NULL, virustotal_permalink TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS virustotalscans (
    virustotalscan INTEGER PRIMARY KEY, virustotal INTEGER NOT NULL,
    virustotalscan_scanner TEXT NOT NULL, virustotalscan_result TEXT);

CREATE TABLE IF NOT EXISTS mysql_commands (
    mysql_command INTEGER PRIMARY KEY, connection INTEGER, mysql_command_cmd NUMBER NOT NULL);
CREATE INDEX IF NOT EXISTS mysql_commands_connection_idx ON mysql_commands (connection);
CREATE TABLE IF NOT EXISTS mysql_command_args (
    mysql_command_arg INTEGER PRIMARY KEY, mysql_command INTEGER,
    mysql_command_arg_index NUMBER NOT NULL, mysql_command_arg_data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS mysql_command_args_command_idx ON mysql_command_args (mysql_command);
CREATE TABLE IF NOT EXISTS mysql_command_ops (
    mysql_command_op INTEGER PRIMARY KEY, mysql_command_cmd INTEGER NOT NULL UNIQUE,
    mysql_command_op_name TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS sip_commands (
    sip_command INTEGER PRIMARY KEY, connection INTEGER, sip_command_method,
    sip_command_call_id, sip_command_user_agent, sip_command_allow INTEGER);
CREATE INDEX IF NOT EXISTS sip_commands_connection_idx ON sip_commands (connection);
CREATE TABLE IF NOT EXISTS sip_addrs (
    sip_addr INTEGER PRIMARY KEY, sip_command INTEGER, sip_addr_type, sip_addr_display_name,
    sip_addr_uri_scheme, sip_addr_uri_user, sip_addr_uri_password, sip_addr_uri_host,
    sip_addr_uri_port);
CREATE TABLE IF NOT EXISTS sip_vias (
    sip_via INTEGER PRIMARY KEY, sip_command INTEGER, sip_via_protocol, sip_via_address,
    sip_via_port);
CREATE TABLE IF NOT EXISTS sip_sdp_origins (
    sip_sdp_origin INTEGER PRIMARY KEY, sip_command INTEGER, sip_sdp_origin_username,
    sip_sdp_origin_sess_id, sip_sdp_origin_sess_version, sip_sdp_origin_nettype,
    sip_sdp_origin_addrtype, sip_sdp_origin_unicast_address);
CREATE TABLE IF NOT EXISTS sip_sdp_connectiondatas (
    sip_sdp_connectiondata INTEGER PRIMARY KEY, sip_command INTEGER,
    sip_sdp_connectiondata_nettype, sip_sdp_connectiondata_addrtype,
    sip_sdp_connectiondata_connection_address, sip_sdp_connectiondata_ttl,
    sip_sdp_connectiondata_number_of_addresses);
CREATE TABLE IF NOT EXISTS sip_sdp_medias (
    sip_sdp_media INTEGER PRIMARY KEY, sip_command INTEGER, sip_sdp_media_media,
    sip_sdp_media_port, sip_sdp_media_number_of_ports, sip_sdp_media_proto);

CREATE TABLE IF NOT EXISTS mqtt_fingerprints (
    mqtt_fingerprint INTEGER PRIMARY KEY, connection INTEGER, mqtt_fingerprint_clientid TEXT,
    mqtt_fingerprint_willtopic TEXT, mqtt_fingerprint_willmessage TEXT,
    mqtt_fingerprint_username TEXT, mqtt_fingerprint_password TEXT);
CREATE TABLE IF NOT EXISTS mqtt_publish_commands (
    mqtt_publish_command INTEGER PRIMARY KEY, connection INTEGER,
    mqtt_publish_command_topic TEXT, mqtt_publish_command_message TEXT);
CREATE TABLE IF NOT EXISTS mqtt_subscribe_commands (
    mqtt_subscribe_command INTEGER PRIMARY KEY, connection INTEGER,
    mqtt_subscribe_command_messageid TEXT, mqtt_subscribe_command_topic TEXT);

-- Not in the reference: how each connection ended (connection.free), one row per connection.
CREATE TABLE IF NOT EXISTS connection_ends (
    connection_end INTEGER PRIMARY KEY, connection INTEGER,
    connection_end_reason TEXT, connection_end_bytes_in INTEGER,
    connection_end_bytes_out INTEGER, connection_end_duration REAL);
CREATE INDEX IF NOT EXISTS connection_ends_connection_idx ON connection_ends (connection);
CREATE INDEX IF NOT EXISTS connection_ends_reason_idx ON connection_ends (connection_end_reason);

-- Not in the reference: what went wrong on a connection: malformed input
-- (protocol.error), a limit that closed it (connection.limit), a capture cut short
-- (store.refused). `data` is the offending input where there is one.
CREATE TABLE IF NOT EXISTS connection_events (
    connection_event INTEGER PRIMARY KEY, connection INTEGER,
    connection_event_kind TEXT, connection_event_detail TEXT, connection_event_data BLOB);
CREATE INDEX IF NOT EXISTS connection_events_connection_idx ON connection_events (connection);
CREATE INDEX IF NOT EXISTS connection_events_kind_idx ON connection_events (connection_event_kind);

-- Not in the reference: TLS ClientHellos (connection.tls.hello); lists as JSON arrays.
CREATE TABLE IF NOT EXISTS tls_hellos (
    tls_hello INTEGER PRIMARY KEY, connection INTEGER,
    tls_hello_sni TEXT, tls_hello_version INTEGER, tls_hello_ciphers TEXT,
    tls_hello_extensions TEXT, tls_hello_groups TEXT, tls_hello_point_formats TEXT,
    tls_hello_alpn TEXT, tls_hello_ja3 TEXT, tls_hello_ja3_hash TEXT);
CREATE INDEX IF NOT EXISTS tls_hellos_connection_idx ON tls_hellos (connection);
CREATE INDEX IF NOT EXISTS tls_hellos_ja3_hash_idx ON tls_hellos (tls_hello_ja3_hash);
