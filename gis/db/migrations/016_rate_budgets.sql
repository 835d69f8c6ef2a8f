-- Rate-limit budgets shared by every service node and worker: one token bucket per caller (an API key, a
-- token's subject, a client address). Nodes take tokens in small batches (services/limits.py), so the table
-- sees one statement per batch, not one per request. UNLOGGED: no WAL for counters that mean nothing after
-- a crash (a bucket lost in a crash starts full again); not replicated, so only the primary keeps them.
CREATE UNLOGGED TABLE ops.rate_budgets (
    identity  text PRIMARY KEY,
    tokens    double precision NOT NULL,
    stamp     timestamptz NOT NULL
);

-- Refill the bucket for the time since its last use (at p_rate per second, up to p_burst), then grant
-- up to p_want tokens, whole ones only when the bucket holds at least p_least. Returns what was granted
-- and, when less than p_least was, the seconds until p_least would be there. One row lock, one statement.
CREATE FUNCTION ops.take_tokens(p_identity text, p_want double precision, p_least double precision,
                                p_rate double precision, p_burst double precision,
                                OUT granted double precision, OUT wait_seconds double precision)
LANGUAGE plpgsql AS $$
DECLARE
    now_ timestamptz := clock_timestamp();
    have double precision;
BEGIN
    INSERT INTO ops.rate_budgets AS b (identity, tokens, stamp) VALUES (p_identity, p_burst, now_)
    ON CONFLICT (identity) DO UPDATE
        SET tokens = least(p_burst, b.tokens + greatest(0, extract(epoch FROM now_ - b.stamp)) * p_rate),
            stamp = now_
    RETURNING tokens INTO have;
    IF have >= p_least THEN
        granted := least(p_want, have);
        wait_seconds := 0;
    ELSE
        granted := 0;
        wait_seconds := (p_least - have) / p_rate;
    END IF;
    IF granted > 0 THEN
        UPDATE ops.rate_budgets SET tokens = have - granted WHERE identity = p_identity;
    END IF;
END;
$$;
