-- Tables of the reference sagas (sagas/), applied idempotently by
-- sagas.tables.ensure_tables(); {schema} is the application schema
-- (SAGALINE_APP_SCHEMA, default sagaline_app).
CREATE SCHEMA IF NOT EXISTS {schema};

-- Refund agent: the shop's orders and customers ...
CREATE TABLE IF NOT EXISTS {schema}.orders (
    order_id        text PRIMARY KEY,
    customer_id     bigint NOT NULL,
    amount_cents    bigint NOT NULL CHECK (amount_cents > 0),
    currency        text NOT NULL DEFAULT 'USD',
    ordered_on      date NOT NULL,
    payment_id      text NOT NULL,
    refunded_cents  bigint NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS {schema}.customers (
    customer_id           bigint PRIMARY KEY,
    name                  text NOT NULL,
    email                 text NOT NULL,
    refund_status         text NOT NULL DEFAULT 'none',
    pending_refund_cents  bigint NOT NULL DEFAULT 0,
    updated_at            timestamptz NOT NULL DEFAULT now()
);

-- ... the payment provider's ledger (stands for an external API that takes
-- idempotency keys: one reversal per key) ...
CREATE TABLE IF NOT EXISTS {schema}.payments (
    reversal_id      text PRIMARY KEY,
    idempotency_key  text NOT NULL,
    saga_id          text NOT NULL,
    order_id         text NOT NULL,
    payment_id       text NOT NULL,
    amount_cents     bigint NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS payments_idempotency_key ON {schema}.payments (idempotency_key);

-- ... and the messages sent to customers (an outbox for the mailer).
CREATE TABLE IF NOT EXISTS {schema}.notifications (
    notification_id  bigserial PRIMARY KEY,
    idempotency_key  text NOT NULL,
    saga_id          text NOT NULL,
    customer_id      bigint NOT NULL,
    channel          text NOT NULL,
    body             text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS notifications_idempotency_key ON {schema}.notifications (idempotency_key);

-- Lead enrichment: one row per enriched contact.
CREATE TABLE IF NOT EXISTS {schema}.leads (
    lead_id          bigserial PRIMARY KEY,
    idempotency_key  text NOT NULL,
    saga_id          text NOT NULL,
    batch_id         text NOT NULL,
    email            text NOT NULL,
    name             text NOT NULL,
    company          text NOT NULL,
    industry         text NOT NULL,
    employees        integer NOT NULL,
    score            integer NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS leads_saga ON {schema}.leads (saga_id);

CREATE TABLE IF NOT EXISTS {schema}.lead_batches (
    saga_id          text PRIMARY KEY,
    idempotency_key  text NOT NULL,
    batch_id         text NOT NULL,
    enriched         integer NOT NULL,
    top_email        text,
    created_at       timestamptz NOT NULL DEFAULT now()
);

-- Every LLM completion a committed step made (written in the step's
-- transaction, so a step whose result was recorded appears exactly once).
CREATE TABLE IF NOT EXISTS {schema}.llm_calls (
    call_id          bigserial PRIMARY KEY,
    idempotency_key  text NOT NULL,
    saga_id          text NOT NULL,
    step             text NOT NULL,
    attempt          integer NOT NULL,
    model            text NOT NULL,
    tokens_in        integer NOT NULL,
    tokens_out       integer NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS llm_calls_idempotency_key ON {schema}.llm_calls (idempotency_key);

-- Research agent: reports it files.
CREATE TABLE IF NOT EXISTS {schema}.research_reports (
    saga_id          text PRIMARY KEY,
    idempotency_key  text NOT NULL,
    question         text NOT NULL,
    answer           text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
