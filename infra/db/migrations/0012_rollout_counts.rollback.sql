DROP INDEX rollouts_created_idx;
ALTER TABLE rollouts DROP COLUMN request_summary;
DROP FUNCTION rollout_request_summary(jsonb);
DROP TRIGGER rollout_tenants_counted_delete ON rollout_tenants;
DROP TRIGGER rollout_tenants_counted_update ON rollout_tenants;
DROP TRIGGER rollout_tenants_counted_insert ON rollout_tenants;
DROP FUNCTION rollout_wave_counts_follow();
DROP FUNCTION rollout_wave_counts_add(text, integer, integer, bigint, bigint, bigint, bigint, bigint);
DROP TABLE rollout_wave_counts;
