-- One function makes monthly partitions. ops.ensure_monthly_partitions_in (migration 020) takes the partitions'
-- name prefix as an optional last argument (by default <parent schema>_<parent>, as 020 named them), and
-- ops.ensure_monthly_partitions (migration 014, the audit log's) becomes a call of it with the names 014 gave:
-- <parent>_<YYYYMM> beside the parent, so ops.audit_log's partitions keep their names (retention drops them by
-- their bounds, but the names are what an operator and its queries know). Its default partition,
-- <parent>_default, is the one 014 made, so that step finds it there.
-- The four-argument function is replaced, not overloaded: with both, a call with four arguments would be ambiguous.
DROP FUNCTION ops.ensure_monthly_partitions_in(regclass, text, date, integer);

CREATE FUNCTION ops.ensure_monthly_partitions_in(parent regclass, part_schema text, from_month date,
                                                 months_ahead integer, name_prefix text DEFAULT NULL)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    parent_schema text;
    parent_name text;
    prefix text;
    month date := date_trunc('month', from_month)::date;
    last_month date := (date_trunc('month', now()) + make_interval(months => months_ahead))::date;
    part text;
    made integer := 0;
BEGIN
    SELECT n.nspname, c.relname INTO parent_schema, parent_name
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = parent;
    prefix := coalesce(name_prefix, parent_schema || '_' || parent_name);
    part := prefix || '_default';
    IF to_regclass(format('%I.%I', part_schema, part)) IS NULL THEN
        EXECUTE format('CREATE TABLE %I.%I PARTITION OF %I.%I DEFAULT', part_schema, part, parent_schema,
                       parent_name);
    END IF;
    WHILE month <= last_month LOOP
        part := prefix || '_' || to_char(month, 'YYYYMM');
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

CREATE OR REPLACE FUNCTION ops.ensure_monthly_partitions(parent regclass, from_month date, months_ahead integer)
RETURNS integer LANGUAGE sql AS $$
    SELECT ops.ensure_monthly_partitions_in(parent, n.nspname, from_month, months_ahead, c.relname)
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = parent
$$;
