-- Worker tables: inbox (exactly-once step execution), outbox (replies to
-- publish), payloads (large payloads by reference).  "{schema}" is replaced
-- by the configured, validated schema name.

CREATE TABLE {schema}.inbox (
    idempotency_key text PRIMARY KEY,
    saga_id         text        NOT NULL,
    saga_type       text        NOT NULL,
    kind            text        NOT NULL CHECK (kind IN ('step', 'compensate')),
    step            text        NOT NULL,
    attempt         integer     NOT NULL,
    task_id         text        NOT NULL,
    outcome         text,
    reply_topic     text,
    reply           bytea,
    created_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz
);

CREATE INDEX inbox_saga_idx ON {schema}.inbox (saga_id);

-- One row per message to publish.  The relay that holds the advisory lock of
-- a shard publishes that shard's unsent rows in id order and sets sent_at.
CREATE TABLE {schema}.outbox (
    id         bigserial   PRIMARY KEY,
    shard      smallint    NOT NULL,
    topic      text        NOT NULL,
    key        bytea,
    value      bytea       NOT NULL,
    headers    jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    sent_at    timestamptz
);

CREATE INDEX outbox_unsent_idx ON {schema}.outbox (shard, id) WHERE sent_at IS NULL;
CREATE INDEX outbox_sent_idx ON {schema}.outbox (sent_at) WHERE sent_at IS NOT NULL;

-- Content-addressed payload bytes (sha256 of the bytes is the key).
CREATE TABLE {schema}.payloads (
    sha256     text        PRIMARY KEY,
    size       bigint      NOT NULL,
    data       bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
