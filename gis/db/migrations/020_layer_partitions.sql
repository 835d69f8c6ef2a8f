-- Event layers declared `partition: month` (sensor_readings; gis/db/layer_partitions.py) keep their monthly
-- partitions in a schema of their own: the domain schemas list only the layers' own tables (what QGIS, the
-- PostGIS catalog and `gis db grant`'s roles see), and a partition is never read except through its layer.
CREATE SCHEMA IF NOT EXISTS partitions;

-- As ops.ensure_monthly_partitions (migration 014), with the partitions made in `part_schema` and named
-- <parent schema>_<parent>_<YYYYMM>, plus the default partition <parent schema>_<parent>_default.
CREATE OR REPLACE FUNCTION ops.ensure_monthly_partitions_in(parent regclass, part_schema text, from_month date,
                                                            months_ahead integer)
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
    part := parent_schema || '_' || parent_name || '_default';
    IF to_regclass(format('%I.%I', part_schema, part)) IS NULL THEN
        EXECUTE format('CREATE TABLE %I.%I PARTITION OF %I.%I DEFAULT', part_schema, part, parent_schema,
                       parent_name);
    END IF;
    WHILE month <= last_month LOOP
        part := parent_schema || '_' || parent_name || '_' || to_char(month, 'YYYYMM');
        IF to_regclass(format('%I.%I', part_schema, part)) IS NULL THEN
            EXECUTE format('CREATE TABLE %I.%I PARTITION OF %I.%I FOR VALUES FROM (%L) TO (%L)',
                           part_schema, part, parent_schema, parent_name,
                           month::timestamptz, (month + interval '1 month')::timestamptz);
            made := made + 1;
        END IF;
        month := (month + interval '1 month')::date;
    END LOOP;
    RETURN made;
END $$;
