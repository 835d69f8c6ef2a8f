-- CQL2's ACCENTI (accent-insensitive comparison) is PostgreSQL's unaccent(): a contrib extension that
-- ships with the server package (postgresql-15 on Debian). In public, where the filter SQL names it.
CREATE EXTENSION IF NOT EXISTS unaccent SCHEMA public;
