-- Storage schema v2: metric rows say whether they are exact. Under load the
-- agent captures 1 exchange in N (adaptive sampling); a record captured at
-- N > 1 is counted N times in request_count, the other counts, the token
-- sums and cost_usd_sum, and its row is then an estimate (estimate = TRUE).
-- captured_count is the number of records behind the row (the sample size;
-- equal to request_count on an exact row). Rows written before this
-- migration hold unscaled counts of the records captured: they are marked
-- exact with captured_count = request_count (right unless the agent was
-- sampling then; that agent version did not record it).

ALTER TABLE metrics_1m ADD COLUMN estimate BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE metrics_1m ADD COLUMN captured_count BIGINT NOT NULL DEFAULT 0;
UPDATE metrics_1m SET captured_count = request_count;

ALTER TABLE metrics_1h ADD COLUMN estimate BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE metrics_1h ADD COLUMN captured_count BIGINT NOT NULL DEFAULT 0;
UPDATE metrics_1h SET captured_count = request_count;

ALTER TABLE metrics_1d ADD COLUMN estimate BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE metrics_1d ADD COLUMN captured_count BIGINT NOT NULL DEFAULT 0;
UPDATE metrics_1d SET captured_count = request_count;
