-- Settings operators change without a restart (clients/runtime_config.py); workers poll them.
-- One row per key: 'maintenance' and 'emergency' (booleans), 'solana_endpoints' (an array of
-- URLs, or null for the SOLANA_RPC_ENDPOINTS setting) and 'breaker_override:<name>' (one of
-- none, force_open, force_closed, disabled). A setting switched back to its default keeps its
-- row, so who did it last stays on record.
CREATE TABLE runtime_settings (
    key         text        PRIMARY KEY,
    value       jsonb       NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text        NOT NULL
);

-- The newest breaker snapshot each worker reported, one row per worker and breaker, so
-- `starter.py breaker list` shows what every worker sees.
CREATE TABLE worker_breakers (
    worker_id    text        NOT NULL,
    name         text        NOT NULL,
    snapshot     jsonb       NOT NULL,
    reported_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (worker_id, name)
);
