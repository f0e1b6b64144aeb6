//! CloudNativePG's PostgreSQL parameter tables: which parameters it refuses
//! in `spec.postgresql.parameters` and which need an instance restart.
//!
//! Data and one lookup; no planning (`plan::cnpg` uses these).

/// Parameters CloudNativePG manages itself and rejects in
/// `spec.postgresql.parameters` (its "fixed" and "blocked" configuration
/// parameters, v1.30).
pub const CNPG_FORBIDDEN_PARAMETERS: &[&str] = &[
    "allow_alter_system",
    "allow_system_table_mods",
    "archive_cleanup_command",
    "archive_command",
    "archive_mode",
    "bonjour",
    "bonjour_name",
    "cluster_name",
    "config_file",
    "data_directory",
    "data_sync_retry",
    "event_source",
    "external_pid_file",
    "full_page_writes",
    "hba_file",
    "hot_standby",
    "ident_file",
    "jit_provider",
    "listen_addresses",
    "log_destination",
    "log_directory",
    "log_file_mode",
    "log_filename",
    "log_rotation_age",
    "log_rotation_size",
    "log_truncate_on_rotation",
    "logging_collector",
    "port",
    "primary_conninfo",
    "primary_slot_name",
    "promote_trigger_file",
    "recovery_end_command",
    "recovery_min_apply_delay",
    "recovery_target",
    "recovery_target_action",
    "recovery_target_inclusive",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_timeline",
    "recovery_target_xid",
    "restart_after_crash",
    "restore_command",
    "shared_preload_libraries",
    "ssl",
    "ssl_ca_file",
    "ssl_cert_file",
    "ssl_ciphers",
    "ssl_crl_file",
    "ssl_dh_params_file",
    "ssl_ecdh_curve",
    "ssl_key_file",
    "ssl_max_protocol_version",
    "ssl_min_protocol_version",
    "ssl_passphrase_command",
    "ssl_passphrase_command_supports_reload",
    "ssl_prefer_server_ciphers",
    "stats_temp_directory",
    "synchronous_standby_names",
    "syslog_facility",
    "syslog_ident",
    "syslog_sequence_numbers",
    "syslog_split_messages",
    "unix_socket_directories",
    "unix_socket_group",
    "unix_socket_permissions",
    "wal_level",
    "wal_log_hints",
];

/// Parameters whose change PostgreSQL applies only after a restart
/// (`context = postmaster`); CNPG then rolls the instances.
pub const PG_RESTART_PARAMETERS: &[&str] = &[
    "shared_buffers",
    "max_connections",
    "max_worker_processes",
    "max_parallel_workers",
    "max_prepared_transactions",
    "max_locks_per_transaction",
    "max_pred_locks_per_transaction",
    "max_wal_senders",
    "max_replication_slots",
    "huge_pages",
    "track_commit_timestamp",
    "wal_buffers",
    "autovacuum_max_workers",
    "max_files_per_process",
    "shared_memory_type",
    "dynamic_shared_memory_type",
];

/// Whether changing `parameter` needs a PostgreSQL restart.
pub fn needs_restart(parameter: &str) -> bool {
    PG_RESTART_PARAMETERS.contains(&parameter)
}
