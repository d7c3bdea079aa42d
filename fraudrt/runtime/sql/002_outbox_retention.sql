-- How far each owner's outbox pruner has walked the outbox ids: every row of that owner with an id
-- at or below deleted_through has been deleted (all of them were published and past retention).
CREATE TABLE IF NOT EXISTS rt_outbox_retention (
    owner            TEXT PRIMARY KEY,
    deleted_through  BIGINT NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
