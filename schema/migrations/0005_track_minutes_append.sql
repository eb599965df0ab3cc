-- tspi archive, migration 5: the per-minute aggregate is appended to, and
-- folded in the background.
--
-- Migration 4 upserted each batch's (minute, sensor) rows into
-- tspi_track_minutes in the batch's transaction. An upsert row costs
-- PostgreSQL far more than an inserted one (the conflict check, then a new
-- row version and index entries in both of its indexes), and a batch holds
-- one row per (minute, sensor) it touches: measured in the archive bench,
-- where a batch touches about as many of those as it has rows, the upsert
-- took PostgreSQL from ~9 to ~16 µs per telemetry row and the rate from
-- ~75k to ~50k rows/s.
--
-- Now a batch appends its rows to tspi_track_minutes_recent (no index, no
-- key: plain inserts), still in its own transaction, so the aggregate stays
-- exact and committed with its rows. tspi_track_minutes_fold(), called
-- every few seconds by the archiver on a session of its own (off the
-- batches' path, on another core where there is one), moves what is there
-- into tspi_track_minutes_folded (one row per minute and sensor) in one
-- transaction: each counted row is in exactly one of the two tables at any
-- time. tspi_track_minutes is now a view summing both, one row per minute
-- and sensor, as the table was: its readers (tspi_tracks_between,
-- tspi_timeline, the console's timeline, hand-written queries) read it
-- unchanged, and a condition on minute or sensor_id is pushed into both
-- tables.

ALTER TABLE tspi_track_minutes RENAME TO tspi_track_minutes_folded;

CREATE TABLE tspi_track_minutes_recent (
    minute     timestamptz NOT NULL,
    sensor_id  integer     NOT NULL,
    rows       bigint      NOT NULL,
    first_recv timestamptz NOT NULL,
    last_recv  timestamptz NOT NULL
);

CREATE VIEW tspi_track_minutes AS
SELECT minute, sensor_id, sum(rows)::bigint AS rows,
       min(first_recv) AS first_recv, max(last_recv) AS last_recv
FROM (
    SELECT minute, sensor_id, rows, first_recv, last_recv FROM tspi_track_minutes_folded
    UNION ALL
    SELECT minute, sensor_id, rows, first_recv, last_recv FROM tspi_track_minutes_recent
) u
GROUP BY minute, sensor_id;

-- Fold what tspi_track_minutes_recent holds into tspi_track_minutes_folded.
-- Returns the recent rows folded. Safe beside the archivers' inserts (a
-- row committed after this statement began stays for the next fold) and
-- beside another fold (a row is deleted, hence folded, once; the advisory
-- lock only keeps two folds from waiting on each other's rows).
CREATE FUNCTION tspi_track_minutes_fold() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('tspi_track_minutes fold')) THEN
        RETURN 0;
    END IF;
    WITH moved AS (
        DELETE FROM tspi_track_minutes_recent RETURNING *
    ), g AS (
        SELECT minute, sensor_id, sum(rows)::bigint AS rows, min(first_recv) AS first_recv,
               max(last_recv) AS last_recv, count(*) AS parts
        FROM moved
        GROUP BY minute, sensor_id
    ), a AS (
        INSERT INTO tspi_track_minutes_folded AS t (minute, sensor_id, rows, first_recv, last_recv)
        SELECT minute, sensor_id, rows, first_recv, last_recv FROM g ORDER BY 1, 2
        ON CONFLICT (minute, sensor_id) DO UPDATE
            SET rows = t.rows + excluded.rows,
                first_recv = least(t.first_recv, excluded.first_recv),
                last_recv = greatest(t.last_recv, excluded.last_recv)
    )
    SELECT coalesce(sum(parts), 0)::bigint INTO n FROM g;
    RETURN n;
END
$$;

-- Migration 4's function, now appending (the view sums; a fold merges).
CREATE OR REPLACE FUNCTION tspi_track_minutes_add_rows(lo timestamptz, hi timestamptz) RETURNS bigint
LANGUAGE sql AS $$
    WITH g AS (
        SELECT date_bin('1 minute', recv_time, timestamptz '2000-01-01 00:00+00') AS minute,
               sensor_id, count(*) AS rows, min(recv_time) AS first_recv,
               max(recv_time) AS last_recv
        FROM tspi_telemetry
        WHERE recv_time >= lo AND recv_time < hi
        GROUP BY 1, 2
    ), a AS (
        INSERT INTO tspi_track_minutes_recent (minute, sensor_id, rows, first_recv, last_recv)
        SELECT minute, sensor_id, rows, first_recv, last_recv FROM g
    )
    SELECT coalesce(sum(rows), 0)::bigint FROM g
$$;

-- Retention (migration 3's function): the aggregate's minutes of the days
-- it drops go from both tables.
CREATE OR REPLACE FUNCTION tspi_archive_drop_before(cutoff timestamptz) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    part text;
BEGIN
    DELETE FROM tspi_track_minutes_folded
    WHERE date_bin('1 day', minute, timestamptz '2000-01-01 00:00+00') + interval '1 day' <= cutoff;
    DELETE FROM tspi_track_minutes_recent
    WHERE date_bin('1 day', minute, timestamptz '2000-01-01 00:00+00') + interval '1 day' <= cutoff;
    IF tspi_archive_partitioning() = 'timescaledb' THEN
        RETURN QUERY EXECUTE 'SELECT drop_chunks(''tspi_telemetry'', older_than => $1)::text'
            USING cutoff;
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('tspi_telemetry partitions'));
    FOR part IN
        SELECT c.relname::text
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'tspi_telemetry'::regclass
          AND c.relname ~ '^tspi_telemetry_p[0-9]{8}$'
        ORDER BY 1
    LOOP
        IF (to_date(substr(part, 17), 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC' <= cutoff THEN
            EXECUTE format('DROP TABLE %I', part);
            RETURN NEXT part;
        END IF;
    END LOOP;
END
$$;
