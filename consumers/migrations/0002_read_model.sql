-- Read model kept from the journal by the projection consumer
-- (consumers/projections.py): one row per saga, its timeline, and the
-- consumed journal offsets, which commit in the same transaction as the rows
-- they produced (exactly-once into PostgreSQL).  "{schema}" is replaced by
-- the configured, validated schema name.

CREATE TABLE {schema}.saga_status (
    saga_id       text        PRIMARY KEY,
    saga_type     text        NOT NULL,
    saga_version  integer     NOT NULL,
    status        text        NOT NULL,
    current_step  text,
    waiting_for   text,
    started_at    timestamptz,
    updated_at    timestamptz NOT NULL,
    finished_at   timestamptz,
    last_seq      integer     NOT NULL,
    attempts      integer     NOT NULL DEFAULT 0,
    retries       integer     NOT NULL DEFAULT 0,
    llm_calls     bigint      NOT NULL DEFAULT 0,
    tokens_in     bigint      NOT NULL DEFAULT 0,
    tokens_out    bigint      NOT NULL DEFAULT 0,
    cost_micros   bigint      NOT NULL DEFAULT 0,
    error         text,
    -- the folded SagaState (Avro, schemas.codec) the next entry is folded onto
    snapshot      bytea       NOT NULL
);

CREATE INDEX saga_status_type_status_idx ON {schema}.saga_status (saga_type, status, updated_at DESC);
CREATE INDEX saga_status_status_idx ON {schema}.saga_status (status, updated_at DESC);

CREATE TABLE {schema}.saga_timeline (
    saga_id     text        NOT NULL,
    seq         integer     NOT NULL,
    at          timestamptz NOT NULL,
    input_type  text,
    input       text        NOT NULL,
    events      jsonb       NOT NULL,
    PRIMARY KEY (saga_id, seq)
);

CREATE TABLE {schema}.projection_offsets (
    projection  text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    next_offset bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, topic, partition)
);
