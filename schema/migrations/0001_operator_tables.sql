-- tspi archive, migration 1: the operator tables, rejects and settings.
-- Applied once, in a transaction, and recorded in tspi_schema_migrations.

-- Choices made when the schema was created (e.g. the partitioning mode).
CREATE TABLE tspi_archive_settings (
    key   text PRIMARY KEY,
    value text NOT NULL
);

-- Messages that could not be archived as rows: the reason and the body as
-- it was, so nothing is lost. Key: the stream message (a redelivery of the
-- same message is the same row; stream_time tells apart a sequence number
-- reused after the stream was recreated).
CREATE TABLE tspi_rejects (
    stream      text        NOT NULL,
    stream_seq  bigint      NOT NULL,
    stream_time timestamptz NOT NULL,
    subject     text        NOT NULL,
    msg_id      text,
    reason_kind text        NOT NULL,
    reason      text        NOT NULL,
    body        bytea       NOT NULL,
    archived_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, stream_seq, stream_time)
);

-- Tags (CONTRACT §5, tags.broadcast). One row per version of a tag: a tag
-- re-sent with a later updated_ts is a new row; the same version again
-- (a redelivery, a second publisher) is not. body is the original CBOR, so
-- replay re-emits it unchanged.
CREATE TABLE tspi_tags (
    id          text        NOT NULL,
    ts          timestamptz NOT NULL,
    label       text        NOT NULL,
    status      text,
    updated_ts  timestamptz NOT NULL,
    creator     text,
    notes       text,
    extra       jsonb,
    body        bytea       NOT NULL,
    subject     text        NOT NULL,
    msg_id      text,
    stream_seq  bigint      NOT NULL,
    archived_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, updated_ts)
);
CREATE INDEX tspi_tags_ts ON tspi_tags (ts);

-- Display commands (CONTRACT §5, tspi.cmd.display.*), deduplicated on
-- cmd_id (their Nats-Msg-Id).
CREATE TABLE tspi_display_commands (
    cmd_id      text PRIMARY KEY,
    name        text        NOT NULL,
    ts          timestamptz NOT NULL,
    sender      text,
    payload     jsonb,
    body        bytea       NOT NULL,
    subject     text        NOT NULL,
    stream_seq  bigint      NOT NULL,
    archived_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tspi_display_commands_ts ON tspi_display_commands (ts);

-- Other operator traffic that is archived: control (tspi.ops.ctrl), status
-- heartbeats (tspi.ops.status), other tspi.cmd.> and tags.> subjects. The
-- body as sent, and as JSON when it is CBOR. Key: the stream message.
CREATE TABLE tspi_ops_events (
    subject     text        NOT NULL,
    stream_seq  bigint      NOT NULL,
    stream_time timestamptz NOT NULL,
    msg_id      text,
    body        bytea       NOT NULL,
    body_json   jsonb,
    archived_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_seq, stream_time)
);
CREATE INDEX tspi_ops_events_subject_time ON tspi_ops_events (subject, stream_time);
