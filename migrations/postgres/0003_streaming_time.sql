-- Streaming time (issue 13): per-row mergeable sketches of the time to the
-- first content event and of the time per output token, in µs, merged across
-- tiers like latency_sketch; per-request detail columns for them, the number
-- of stream events and Azure OpenAI's deployment. All nullable: rows written
-- before this migration have none, and requests that did not stream leave
-- them NULL (an empty sketch is written for rows without streams).

ALTER TABLE metrics_1m ADD COLUMN ttft_sketch BYTEA;
ALTER TABLE metrics_1m ADD COLUMN tpot_sketch BYTEA;
ALTER TABLE metrics_1h ADD COLUMN ttft_sketch BYTEA;
ALTER TABLE metrics_1h ADD COLUMN tpot_sketch BYTEA;
ALTER TABLE metrics_1d ADD COLUMN ttft_sketch BYTEA;
ALTER TABLE metrics_1d ADD COLUMN tpot_sketch BYTEA;

ALTER TABLE request_details ADD COLUMN deployment TEXT;
ALTER TABLE request_details ADD COLUMN ttft_us BIGINT;
ALTER TABLE request_details ADD COLUMN tpot_us BIGINT;
ALTER TABLE request_details ADD COLUMN stream_events BIGINT;
