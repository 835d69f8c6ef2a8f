-- Retention of delivered bytes: `gis ops prune` drops the content of finished deliveries older than
-- GIS_DELIVERY_RETENTION_DAYS and stamps when; who sent what, when, its checksum, size and result stay.
ALTER TABLE ops.deliveries ALTER COLUMN content DROP NOT NULL;
ALTER TABLE ops.deliveries ADD COLUMN content_pruned_at timestamptz;
ALTER TABLE ops.deliveries ADD CONSTRAINT deliveries_content_kept_or_pruned
    CHECK (content IS NOT NULL OR content_pruned_at IS NOT NULL);
-- What prune looks for: finished deliveries still holding bytes, oldest first.
CREATE INDEX deliveries_content_kept_idx ON ops.deliveries (received_at)
    WHERE content_pruned_at IS NULL AND status IN ('succeeded', 'failed');
