-- tspi archive, migration 3: tracks per sensor per minute, the aggregate
-- that "what was flying when" and the replay timeline read instead of the
-- raw rows.
--
-- TimescaleDB's continuous aggregates would do this, but they are not in
-- its Apache-2 build; this works the same on a hypertable and on native
-- partitions. A statement-level trigger on tspi_telemetry adds each
-- statement's inserted rows (its transition table: only the rows actually
-- inserted, so a COPY or an INSERT ... ON CONFLICT DO NOTHING of rows
-- already there adds nothing) in the same transaction: the aggregate is
-- exact and committed with its rows. Minutes are bins of the UTC clock
-- (date_bin: no session time zone involved).

CREATE TABLE tspi_track_minutes (
    minute     timestamptz NOT NULL,
    sensor_id  integer     NOT NULL,
    rows       bigint      NOT NULL,
    first_recv timestamptz NOT NULL,
    last_recv  timestamptz NOT NULL,
    PRIMARY KEY (minute, sensor_id)
);
-- "When did this sensor fly".
CREATE INDEX tspi_track_minutes_sensor ON tspi_track_minutes (sensor_id, minute);

INSERT INTO tspi_track_minutes (minute, sensor_id, rows, first_recv, last_recv)
SELECT date_bin('1 minute', recv_time, timestamptz '2000-01-01 00:00+00'), sensor_id,
       count(*), min(recv_time), max(recv_time)
FROM tspi_telemetry
GROUP BY 1, 2;

CREATE FUNCTION tspi_track_minutes_add() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tspi_track_minutes AS t (minute, sensor_id, rows, first_recv, last_recv)
    SELECT date_bin('1 minute', recv_time, timestamptz '2000-01-01 00:00+00'), sensor_id,
           count(*), min(recv_time), max(recv_time)
    FROM tspi_new_rows
    GROUP BY 1, 2
    ON CONFLICT (minute, sensor_id) DO UPDATE
        SET rows = t.rows + excluded.rows,
            first_recv = least(t.first_recv, excluded.first_recv),
            last_recv = greatest(t.last_recv, excluded.last_recv);
    RETURN NULL;
END
$$;

CREATE TRIGGER tspi_track_minutes_add
    AFTER INSERT ON tspi_telemetry
    REFERENCING NEW TABLE AS tspi_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tspi_track_minutes_add();

-- Which sensors sent rows in [lo, hi), with their first and last receive
-- time and row count in it: whole minutes from the aggregate, the partial
-- minutes at either end from the raw rows. Exactly what the same query on
-- tspi_telemetry alone says.
CREATE FUNCTION tspi_tracks_between(lo timestamptz, hi timestamptz)
RETURNS TABLE (sensor_id integer, first_recv timestamptz, last_recv timestamptz, rows bigint)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    origin constant timestamptz := timestamptz '2000-01-01 00:00+00';
    -- Whole minutes: [a, z). Raw rows: [lo, a) and [z, hi); all of
    -- [lo, hi) when it holds no whole minute.
    a timestamptz := date_bin('1 minute', lo, origin);
    z timestamptz := date_bin('1 minute', hi, origin);
BEGIN
    IF a < lo THEN
        a := a + interval '1 minute';
    END IF;
    IF a >= z THEN
        a := hi;
        z := hi;
    END IF;
    RETURN QUERY
    SELECT p.sensor_id, min(p.first_recv), max(p.last_recv), sum(p.rows)::bigint
    FROM (
        SELECT m.sensor_id, m.first_recv, m.last_recv, m.rows
        FROM tspi_track_minutes m
        WHERE m.minute >= a AND m.minute < z
        UNION ALL
        SELECT r.sensor_id, min(r.recv_time), max(r.recv_time), count(*)
        FROM tspi_telemetry r
        WHERE r.recv_time >= lo AND r.recv_time < a
        GROUP BY r.sensor_id
        UNION ALL
        SELECT r.sensor_id, min(r.recv_time), max(r.recv_time), count(*)
        FROM tspi_telemetry r
        WHERE r.recv_time >= z AND r.recv_time < hi
        GROUP BY r.sensor_id
    ) p
    GROUP BY p.sensor_id
    ORDER BY p.sensor_id;
END
$$;

-- The replay timeline: per minute in [lo, hi), how many sensors sent rows
-- and how many rows (minute resolution: from the aggregate alone).
CREATE FUNCTION tspi_timeline(lo timestamptz, hi timestamptz)
RETURNS TABLE (minute timestamptz, sensors bigint, rows bigint)
LANGUAGE sql STABLE AS $$
    SELECT minute, count(*), sum(rows)::bigint
    FROM tspi_track_minutes
    WHERE minute >= date_bin('1 minute', lo, timestamptz '2000-01-01 00:00+00') AND minute < hi
    GROUP BY minute
    ORDER BY minute
$$;

-- Retention (migration 2's function, and now the aggregate's minutes of
-- the days it drops: a day goes when it ended at or before cutoff).
CREATE OR REPLACE FUNCTION tspi_archive_drop_before(cutoff timestamptz) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    part text;
BEGIN
    DELETE FROM tspi_track_minutes
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
