-- The Todo API's schema, valid on Aurora DSQL and on PostgreSQL.
-- Aurora DSQL: one DDL statement per transaction, no foreign keys, no sequences
-- needed (UUID keys), and indexes are built asynchronously (CREATE INDEX ASYNC).
-- `dsqltrace migrate` runs each statement below in its own transaction; each
-- is safe to run twice.  "-- dsql:" and "-- postgres:" lines are the
-- alternatives for one engine only.

CREATE TABLE IF NOT EXISTS todos (
    id          uuid PRIMARY KEY,
    name        varchar(200) NOT NULL,
    description varchar(2000),
    completed   boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Newest-first listing with a keyset cursor: ORDER BY created_at DESC, id DESC.
-- dsql: CREATE INDEX ASYNC IF NOT EXISTS todos_created_at_id ON todos (created_at, id);
-- postgres: CREATE INDEX IF NOT EXISTS todos_created_at_id ON todos (created_at, id);
