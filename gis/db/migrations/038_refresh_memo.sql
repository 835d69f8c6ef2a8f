-- What a refresh learnt of each delivered row, kept for the next refresh of the layer (gis/refresh/memo.py):
-- fid, a hash of the row's source bytes and the row hash normalising it gave. A later delivery's row with the
-- same source bytes, whose current version still has that row hash, is unchanged without being normalised
-- again. One Arrow IPC stream per layer, replaced by each refresh; `memo_key` names what normalising depends
-- on (the layer file, the city extent, the libraries' versions): a memo under another key is not used.
CREATE TABLE IF NOT EXISTS ops.refresh_memo (
    layer_id text PRIMARY KEY,
    memo_key text NOT NULL,
    rows bigint NOT NULL,
    data bytea NOT NULL,
    saved_at timestamptz NOT NULL DEFAULT now()
);
-- Random hashes do not compress: stored out of line as they are.
ALTER TABLE ops.refresh_memo ALTER COLUMN data SET STORAGE EXTERNAL;
