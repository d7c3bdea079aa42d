-- The part file a checkpoint points into, by name (part_index is its position in the facts view's part
-- list): an operator reads "part-000003.parquet row 17", and a resume refuses a list that moved under it.
ALTER TABLE wsp_checkpoints ADD COLUMN IF NOT EXISTS part_uri TEXT;
