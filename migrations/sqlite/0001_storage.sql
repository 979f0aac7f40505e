-- Storage schema v1: 1-minute, 1-hour and 1-day metric rows, sampled
-- per-request detail rows (no prompt or completion text, no headers),
-- flush bookkeeping and F-score test results. Timestamps are Unix time
-- (bucket_start in seconds, ts_ms in milliseconds, UTC). Rows are keyed by
-- agent too, so many agents can write one database; queries merge agents.
-- Costs are exact decimals (decimal strings in SQLite); latency_sketch/ttfb_sketch hold the
-- mergeable quantile sketch (see docs/storage.md) from which the pNN columns
-- were computed.

CREATE TABLE metrics_1m (
    bucket_start BIGINT NOT NULL,
    agent_id TEXT NOT NULL,
    application_id TEXT NOT NULL,
    side TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    request_count BIGINT NOT NULL,
    error_count BIGINT NOT NULL,
    cache_hits BIGINT NOT NULL,
    usage_unknown_count BIGINT NOT NULL,
    unpriced_count BIGINT NOT NULL,
    tokens_input_sum BIGINT NOT NULL,
    tokens_output_sum BIGINT NOT NULL,
    tokens_cached_sum BIGINT NOT NULL,
    tokens_cache_creation_sum BIGINT NOT NULL,
    tokens_reasoning_sum BIGINT NOT NULL,
    cost_usd_sum TEXT NOT NULL,
    latency_p50_us BIGINT NOT NULL,
    latency_p90_us BIGINT NOT NULL,
    latency_p99_us BIGINT NOT NULL,
    latency_max_us BIGINT NOT NULL,
    ttfb_p50_us BIGINT NOT NULL,
    ttfb_p90_us BIGINT NOT NULL,
    ttfb_p99_us BIGINT NOT NULL,
    ttfb_max_us BIGINT NOT NULL,
    latency_sketch BLOB NOT NULL,
    ttfb_sketch BLOB NOT NULL,
    PRIMARY KEY (bucket_start, agent_id, application_id, side, provider, model)
) WITHOUT ROWID;

CREATE TABLE metrics_1h (
    bucket_start BIGINT NOT NULL,
    agent_id TEXT NOT NULL,
    application_id TEXT NOT NULL,
    side TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    request_count BIGINT NOT NULL,
    error_count BIGINT NOT NULL,
    cache_hits BIGINT NOT NULL,
    usage_unknown_count BIGINT NOT NULL,
    unpriced_count BIGINT NOT NULL,
    tokens_input_sum BIGINT NOT NULL,
    tokens_output_sum BIGINT NOT NULL,
    tokens_cached_sum BIGINT NOT NULL,
    tokens_cache_creation_sum BIGINT NOT NULL,
    tokens_reasoning_sum BIGINT NOT NULL,
    cost_usd_sum TEXT NOT NULL,
    latency_p50_us BIGINT NOT NULL,
    latency_p90_us BIGINT NOT NULL,
    latency_p99_us BIGINT NOT NULL,
    latency_max_us BIGINT NOT NULL,
    ttfb_p50_us BIGINT NOT NULL,
    ttfb_p90_us BIGINT NOT NULL,
    ttfb_p99_us BIGINT NOT NULL,
    ttfb_max_us BIGINT NOT NULL,
    latency_sketch BLOB NOT NULL,
    ttfb_sketch BLOB NOT NULL,
    PRIMARY KEY (bucket_start, agent_id, application_id, side, provider, model)
) WITHOUT ROWID;

CREATE TABLE metrics_1d (
    bucket_start BIGINT NOT NULL,
    agent_id TEXT NOT NULL,
    application_id TEXT NOT NULL,
    side TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    request_count BIGINT NOT NULL,
    error_count BIGINT NOT NULL,
    cache_hits BIGINT NOT NULL,
    usage_unknown_count BIGINT NOT NULL,
    unpriced_count BIGINT NOT NULL,
    tokens_input_sum BIGINT NOT NULL,
    tokens_output_sum BIGINT NOT NULL,
    tokens_cached_sum BIGINT NOT NULL,
    tokens_cache_creation_sum BIGINT NOT NULL,
    tokens_reasoning_sum BIGINT NOT NULL,
    cost_usd_sum TEXT NOT NULL,
    latency_p50_us BIGINT NOT NULL,
    latency_p90_us BIGINT NOT NULL,
    latency_p99_us BIGINT NOT NULL,
    latency_max_us BIGINT NOT NULL,
    ttfb_p50_us BIGINT NOT NULL,
    ttfb_p90_us BIGINT NOT NULL,
    ttfb_p99_us BIGINT NOT NULL,
    ttfb_max_us BIGINT NOT NULL,
    latency_sketch BLOB NOT NULL,
    ttfb_sketch BLOB NOT NULL,
    PRIMARY KEY (bucket_start, agent_id, application_id, side, provider, model)
) WITHOUT ROWID;

CREATE TABLE request_details (
    ts_ms BIGINT NOT NULL,
    agent_id TEXT NOT NULL,
    flush_seq BIGINT NOT NULL,
    application_id TEXT NOT NULL,
    side TEXT NOT NULL,
    provider TEXT NOT NULL,
    upstream_provider TEXT,
    operation TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    model_requested TEXT,
    model_returned TEXT,
    status INTEGER NOT NULL,
    error_type TEXT,
    streaming BOOLEAN NOT NULL,
    cache_hit BOOLEAN,
    ttfb_us BIGINT NOT NULL,
    duration_us BIGINT NOT NULL,
    tokens_input BIGINT,
    tokens_output BIGINT,
    tokens_cached BIGINT,
    tokens_cache_creation BIGINT,
    tokens_reasoning BIGINT,
    cost_usd TEXT,
    session_id TEXT,
    user_id TEXT,
    truncated BOOLEAN NOT NULL
);
CREATE INDEX request_details_ts ON request_details (ts_ms);

-- One row per agent: the sequence number of its last committed flush. A flush
-- writes its rows and this number in one transaction, so a flush retried
-- after an error whose outcome was unknown is recognised and not applied twice.
CREATE TABLE agent_flushes (
    agent_id TEXT PRIMARY KEY,
    last_flush_seq BIGINT NOT NULL,
    last_flush_unix_ms BIGINT NOT NULL
);

-- Test-execution results for F-scores (expected vs actual per test case).
-- Re-ingesting the same result is a no-op (primary key).
CREATE TABLE fscore_results (
    ts_ms BIGINT NOT NULL,
    application_id TEXT NOT NULL,
    suite TEXT NOT NULL,
    model TEXT NOT NULL,
    test_case TEXT NOT NULL,
    expected BOOLEAN NOT NULL,
    actual BOOLEAN NOT NULL,
    agent_id TEXT NOT NULL,
    PRIMARY KEY (application_id, suite, model, test_case, ts_ms)
);
CREATE INDEX fscore_results_ts ON fscore_results (ts_ms);
