-- A month's partition can be made after rows of that month reached the default partition: a file delivery of
-- sensor readings dated months ahead, or readings and audit rows written while `gis ops prune` (which makes the
-- coming months) had not run for a while. PostgreSQL then refuses CREATE TABLE ... PARTITION OF for that month
-- ("updated partition constraint for default partition would be violated"), and `gis migrate` and
-- `gis ops prune` failed from then on. ops.make_month_partition makes the month's partition and, where the
-- default partition holds rows of it, moves them in, in the caller's transaction: the partition is made as a
-- plain table, the rows move from the default partition into it, and it is attached (the check of the default
-- partition then finds none). Both ensure functions (migrations 014 and 020) now make their months through it,
-- by one loop (ops.make_months); their partition names are unchanged.
--
-- The rows move as the tables' owner (migrate and prune run as it), so the QGIS edit trigger, which fires only
-- for other users (gis/edits/db_edits.py), makes no versions of them.

CREATE OR REPLACE FUNCTION ops.make_month_partition(parent regclass, part_schema text, part text, month date)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    lower_bound timestamptz := date_trunc('month', month)::timestamptz;
    upper_bound timestamptz := (date_trunc('month', month) + interval '1 month')::timestamptz;
    default_part regclass;
    key_column text;
    columns text;
    waiting boolean := false;
BEGIN
    SELECT nullif(p.partdefid, 0)::regclass, a.attname INTO default_part, key_column
      FROM pg_partitioned_table p
      JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
     WHERE p.partrelid = parent;
    IF default_part IS NOT NULL THEN
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s WHERE %I >= $1 AND %I < $2)', default_part, key_column,
                       key_column) INTO waiting USING lower_bound, upper_bound;
    END IF;
    IF NOT waiting THEN
        EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)', part_schema, part, parent,
                       lower_bound, upper_bound);
        RETURN;
    END IF;
    SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO columns
      FROM pg_attribute WHERE attrelid = parent AND attnum > 0 AND NOT attisdropped AND attgenerated = '';
    EXECUTE format('CREATE TABLE %I.%I (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED)',
                   part_schema, part, parent);
    EXECUTE format('WITH moved AS (DELETE FROM %s WHERE %I >= $1 AND %I < $2 RETURNING %s) '
                   'INSERT INTO %I.%I (%s) SELECT %s FROM moved', default_part, key_column, key_column, columns,
                   part_schema, part, columns, columns) USING lower_bound, upper_bound;
    EXECUTE format('ALTER TABLE %s ATTACH PARTITION %I.%I FOR VALUES FROM (%L) TO (%L)', parent, part_schema, part,
                   lower_bound, upper_bound);
END $$;

-- The months from `from_month` to `months_ahead` past this one, each <prefix>_<YYYYMM> in part_schema; how
-- many were made. Both ensure functions are this loop with their own names, so one copy of it remains.
CREATE OR REPLACE FUNCTION ops.make_months(parent regclass, part_schema text, prefix text, from_month date,
                                           months_ahead integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    month date := date_trunc('month', from_month)::date;
    last_month date := (date_trunc('month', now()) + make_interval(months => months_ahead))::date;
    part text;
    made integer := 0;
BEGIN
    WHILE month <= last_month LOOP
        part := prefix || '_' || to_char(month, 'YYYYMM');
        IF to_regclass(format('%I.%I', part_schema, part)) IS NULL THEN
            PERFORM ops.make_month_partition(parent, part_schema, part, month);
            made := made + 1;
        END IF;
        month := (month + interval '1 month')::date;
    END LOOP;
    RETURN made;
END $$;

-- Migration 014's: the audit log's months beside it, named <parent>_<YYYYMM>.
CREATE OR REPLACE FUNCTION ops.ensure_monthly_partitions(parent regclass, from_month date, months_ahead integer)
RETURNS integer LANGUAGE sql AS $$
    SELECT ops.make_months(parent, n.nspname, c.relname, from_month, months_ahead)
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = parent
$$;

-- Migration 020's: the default partition, and the months in part_schema named <parent schema>_<parent>_<YYYYMM>.
CREATE OR REPLACE FUNCTION ops.ensure_monthly_partitions_in(parent regclass, part_schema text, from_month date,
                                                            months_ahead integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    prefix text;
BEGIN
    SELECT n.nspname || '_' || c.relname INTO prefix
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = parent;
    IF to_regclass(format('%I.%I', part_schema, prefix || '_default')) IS NULL THEN
        EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s DEFAULT', part_schema, prefix || '_default', parent);
    END IF;
    RETURN ops.make_months(parent, part_schema, prefix, from_month, months_ahead);
END $$;
