-- record_pins in one round trip (issue 15): the pin lock, the claim check and the insert of
-- every provider's row ran as BEGIN, three statements and COMMIT, five round trips, each of
-- which a flaky network can cut (20 % of statements cut made 67 % of tries fail, and a failed
-- try re-uploads the file). As a function they run in the one statement's own transaction.
-- READ COMMITTED still holds inside: each statement of a VOLATILE plpgsql function takes a
-- fresh snapshot (PostgreSQL docs, "Function Volatility Categories"), so the claim check sees
-- every claim committed before the lock was granted, as the separate statements did.
-- The lock's class is 0x70696E73 ("pins"), the one release_pins takes (db/pins.py).
CREATE OR REPLACE FUNCTION mintsaga_record_pins(p_mint_id text, p_cid text, p_providers text[])
RETURNS TABLE (out_claimed boolean, out_stage text, out_all_present boolean)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(1885957747, hashtext(p_cid));
    IF EXISTS (SELECT 1 FROM mint_pins mp
               WHERE mp.cid = p_cid AND mp.unpin_claimed_until > clock_timestamp()) THEN
        RETURN QUERY SELECT true, NULL::text, false;
        RETURN;
    END IF;
    RETURN QUERY
    WITH m AS (
        SELECT mi.stage FROM mints mi WHERE mi.mint_id = p_mint_id
    ), ins AS (
        INSERT INTO mint_pins (mint_id, cid, provider)
        SELECT p_mint_id, p_cid, p.provider
        FROM m, unnest(p_providers) AS p(provider)
        WHERE m.stage <> 'ROLLED_BACK'
        ON CONFLICT (mint_id, cid, provider) DO NOTHING
        RETURNING provider
    )
    SELECT false,
           (SELECT m.stage FROM m),
           NOT EXISTS (
               SELECT 1 FROM unnest(p_providers) AS p(provider)
               WHERE p.provider NOT IN (SELECT i.provider FROM ins i)
                 AND NOT EXISTS (SELECT 1 FROM mint_pins mp
                                 WHERE mp.mint_id = p_mint_id AND mp.cid = p_cid
                                   AND mp.provider = p.provider)
           );
END
$$;
