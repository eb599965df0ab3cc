-- tspi archive, migration 2: telemetry, partitioned by day of receive time.
--
-- The partitioning mode comes from the session setting tspi.partitioning
-- ('auto', 'timescaledb' or 'native'; the archiver sets it from
-- archive.partitioning before migrating):
-- - timescaledb: a hypertable with 1-day chunks. Needs the extension in
--   this database: created by a DBA beforehand (an ordinary archive role),
--   or created here when the library is preloaded and this role may (a
--   superuser, or a role with CREATE on the database: the extension is
--   trusted);
-- - native: declarative range partitioning, one partition per UTC day,
--   named tspi_telemetry_pYYYYMMDD, created ahead of time and on demand by
--   tspi_archive_ensure_partitions;
-- - auto: timescaledb when the extension is there or can be created, else
--   native.
-- The decision reads only what any role can see: pg_extension, whether the
-- TimescaleDB loader is in this backend (its setting timescaledb.disable_load
-- exists only when the library is preloaded), pg_available_extension_versions
-- and the role's own privileges. Never shared_preload_libraries, which needs
-- superuser or pg_read_all_settings.
-- The mode chosen is recorded in tspi_archive_settings('partitioning').
--
-- Dedup: the unique key is (recv_time, msg_id). A partitioned table (and a
-- hypertable) only allows unique indexes that contain the partition key, so
-- recv_time is in it. A redelivered stream message carries the same body,
-- hence the same recv_time and msg_id: it conflicts and is skipped. The same
-- datagram stored twice in the stream (two ingest boxes, outside the
-- stream's duplicate window) has two receive times and is kept twice, each
-- with its own stream_seq; inside the window JetStream already dropped it.
-- recv_time first also makes this index the "everything in a time window"
-- index, and keeps its inserts at the right-hand edge of the b-tree.

DO $migration$
DECLARE
    wanted  text := coalesce(nullif(current_setting('tspi.partitioning', true), ''), 'auto');
    have_ext   boolean;
    can_create boolean;
    have_ts    boolean;
    mode    text;
    columns text := $cols$
        recv_time            timestamptz      NOT NULL,
        recv_epoch_ms        bigint           NOT NULL,
        sensor_id            integer          NOT NULL,
        msg_type             text             NOT NULL CHECK (msg_type IN ('geocentric', 'spherical')),
        day                  smallint         NOT NULL,
        time_s               double precision NOT NULL,
        status               smallint         NOT NULL,
        status_flags         integer          NOT NULL,
        x_m                  double precision,
        y_m                  double precision,
        z_m                  double precision,
        vx_mps               double precision,
        vy_mps               double precision,
        vz_mps               double precision,
        ax_mps2              double precision,
        ay_mps2              double precision,
        az_mps2              double precision,
        range_m              double precision,
        azimuth_deg          double precision,
        elevation_deg        double precision,
        azimuth_rate_dps     double precision,
        elevation_rate_dps   double precision,
        range_rate_mps       double precision,
        azimuth_accel_dps2   double precision,
        elevation_accel_dps2 double precision,
        range_accel_mps2     double precision,
        raw                  bytea            NOT NULL CHECK (octet_length(raw) = 37),
        msg_id               text             NOT NULL,
        stream_seq           bigint           NOT NULL
    $cols$;
BEGIN
    IF wanted NOT IN ('auto', 'timescaledb', 'native') THEN
        RAISE EXCEPTION 'tspi.partitioning = %: expected auto, timescaledb or native', wanted;
    END IF;
    have_ext := EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb');
    can_create := current_setting('timescaledb.disable_load', true) IS NOT NULL
        AND EXISTS (
            SELECT 1
            FROM pg_available_extensions e
            JOIN pg_available_extension_versions v
              ON v.name = e.name AND v.version = e.default_version
            WHERE e.name = 'timescaledb'
              AND (NOT v.superuser
                   OR (v.trusted AND has_database_privilege(current_database(), 'CREATE'))
                   OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)));
    have_ts := have_ext OR can_create;
    IF wanted = 'timescaledb' AND NOT have_ts THEN
        RAISE EXCEPTION 'archive.partitioning = "timescaledb", but the timescaledb extension is not installed in this database, and this role cannot create it (the library is not in shared_preload_libraries, or the role lacks CREATE on the database)'
            USING HINT = 'a DBA adds timescaledb to shared_preload_libraries, restarts PostgreSQL and runs CREATE EXTENSION timescaledb in this database; or use partitioning "native" or "auto"';
    END IF;
    mode := CASE WHEN wanted = 'native' OR NOT have_ts THEN 'native' ELSE 'timescaledb' END;
    IF mode = 'timescaledb' THEN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
        EXECUTE 'CREATE TABLE tspi_telemetry (' || columns || ')';
        PERFORM create_hypertable('tspi_telemetry', 'recv_time',
                                  chunk_time_interval => interval '1 day',
                                  create_default_indexes => false);
    ELSE
        EXECUTE 'CREATE TABLE tspi_telemetry (' || columns || ') PARTITION BY RANGE (recv_time)';
    END IF;
    INSERT INTO tspi_archive_settings (key, value) VALUES ('partitioning', mode);
END
$migration$;

-- Dedup, and "everything in a time window".
CREATE UNIQUE INDEX tspi_telemetry_time_msg_id ON tspi_telemetry (recv_time, msg_id);
-- "One sensor over a time window".
CREATE INDEX tspi_telemetry_sensor_time ON tspi_telemetry (sensor_id, recv_time);

CREATE FUNCTION tspi_archive_partitioning() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT value FROM tspi_archive_settings WHERE key = 'partitioning'
$$;

-- Native mode: make sure the day partitions of these UTC days (days since
-- 1970-01-01) exist. Returns how many were created. Serialised by an
-- advisory lock so two archivers never race on one partition. A no-op for
-- TimescaleDB, which makes its chunks itself.
CREATE FUNCTION tspi_archive_ensure_partitions(days integer[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    d       date;
    name    text;
    created integer := 0;
BEGIN
    IF tspi_archive_partitioning() <> 'native' THEN
        RETURN 0;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('tspi_telemetry partitions'));
    FOR d IN SELECT DISTINCT date '1970-01-01' + x FROM unnest(days) AS x ORDER BY 1 LOOP
        name := 'tspi_telemetry_p' || to_char(d, 'YYYYMMDD');
        IF to_regclass(name) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF tspi_telemetry FOR VALUES FROM (%L) TO (%L)',
                name, d::timestamp AT TIME ZONE 'UTC', (d + 1)::timestamp AT TIME ZONE 'UTC');
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END
$$;

-- Retention: drop whole days that ended at or before cutoff. Returns the
-- names of what was dropped (partitions, or TimescaleDB chunks).
CREATE FUNCTION tspi_archive_drop_before(cutoff timestamptz) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    part text;
BEGIN
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
