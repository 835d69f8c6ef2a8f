-- ops.audit_log grows with every read of a non-public layer (one application paging for 60 s wrote 55,000
-- rows): partitioned by month on `at`, so retention drops whole partitions (`gis ops prune`) instead of
-- deleting rows, and a query over a time range reads only its months. The default partition takes rows of
-- months with no partition yet, so an insert never fails; ops.ensure_monthly_partitions (called here, by
-- `gis migrate` and by `gis ops prune`) keeps the coming months' partitions made.

CREATE OR REPLACE FUNCTION ops.ensure_monthly_partitions(parent regclass, from_month date, months_ahead integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    parent_schema text;
    parent_name text;
    month date := date_trunc('month', from_month)::date;
    last_month date := (date_trunc('month', now()) + make_interval(months => months_ahead))::date;
    part text;
    made integer := 0;
BEGIN
    SELECT n.nspname, c.relname INTO parent_schema, parent_name
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = parent;
    WHILE month <= last_month LOOP
        part := parent_name || '_' || to_char(month, 'YYYYMM');
        IF to_regclass(format('%I.%I', parent_schema, part)) IS NULL THEN
            EXECUTE format('CREATE TABLE %I.%I PARTITION OF %I.%I FOR VALUES FROM (%L) TO (%L)',
                           parent_schema, part, parent_schema, parent_name,
                           month::timestamptz, (month + interval '1 month')::timestamptz);
            made := made + 1;
        END IF;
        month := (month + interval '1 month')::date;
    END LOOP;
    RETURN made;
END $$;

ALTER TABLE ops.audit_log RENAME TO audit_log_before_014;
ALTER INDEX ops.audit_log_pkey RENAME TO audit_log_before_014_pkey;
ALTER INDEX ops.audit_log_at_idx RENAME TO audit_log_before_014_at_idx;
ALTER INDEX ops.audit_log_layer_idx RENAME TO audit_log_before_014_layer_idx;
ALTER SEQUENCE ops.audit_log_audit_id_seq OWNED BY NONE;

CREATE TABLE ops.audit_log (
    audit_id    bigint NOT NULL DEFAULT nextval('ops.audit_log_audit_id_seq'),
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    subject     text NOT NULL,
    role        text NOT NULL,
    method      text NOT NULL,
    key_id      text,
    action      text NOT NULL,
    layer_id    text,
    path        text,
    query       jsonb NOT NULL DEFAULT '{}'::jsonb,
    features    integer,
    status      integer,
    PRIMARY KEY (audit_id, at)
) PARTITION BY RANGE (at);
ALTER SEQUENCE ops.audit_log_audit_id_seq OWNED BY ops.audit_log.audit_id;
CREATE INDEX audit_log_at_idx ON ops.audit_log (at DESC);
CREATE INDEX audit_log_layer_idx ON ops.audit_log (layer_id, at DESC);
CREATE INDEX audit_log_id_idx ON ops.audit_log (audit_id DESC);  -- GET /audit pages newest first by id
CREATE TABLE ops.audit_log_default PARTITION OF ops.audit_log DEFAULT;

SELECT ops.ensure_monthly_partitions('ops.audit_log',
                                     coalesce((SELECT min(at) FROM ops.audit_log_before_014), now())::date, 3);
INSERT INTO ops.audit_log SELECT * FROM ops.audit_log_before_014;

-- Whoever could read or write the old table can the new one (gis db grant's auditor groups, for one).
DO $$
DECLARE g record;
BEGIN
    FOR g IN SELECT grantee, privilege_type FROM information_schema.role_table_grants
             WHERE table_schema = 'ops' AND table_name = 'audit_log_before_014'
               AND grantee <> current_user LOOP
        EXECUTE format('GRANT %s ON ops.audit_log TO %I', g.privilege_type, g.grantee);
    END LOOP;
END $$;
DROP TABLE ops.audit_log_before_014;
