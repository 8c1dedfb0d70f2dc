-- Prompt caching: how many of a call's prompt tokens a provider read from its prompt cache (or the local backend
-- reused), and how many it wrote to it. Both are part of input_tokens, which keeps counting every prompt token sent.

ALTER TABLE llm_calls ADD COLUMN cached_input_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE llm_calls ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0;

COMMENT ON COLUMN llm_calls.input_tokens IS 'Every prompt token sent, cached ones included.';
COMMENT ON COLUMN llm_calls.cached_input_tokens IS 'Prompt tokens not computed again: a provider''s prompt-cache read (OpenAI cached_tokens, Anthropic cache_read_input_tokens) or the local backend''s reused prefix. Part of input_tokens.';
COMMENT ON COLUMN llm_calls.cache_write_tokens IS 'Prompt tokens written to a provider''s prompt cache (Anthropic cache_creation_input_tokens, billed above the input price). Part of input_tokens.';
COMMENT ON COLUMN llm_calls.cost_usd IS 'USD from the price table, cached and cache-write tokens at their own rates; NULL: no price known.';

-- call_costs gains the cached token counts (a view reads only base tables, so it is replaced whole).
CREATE OR REPLACE VIEW call_costs AS
SELECT run_id, role, model,
       count(*) AS calls,
       count(error) AS errors,
       sum(attempts) AS attempts,
       sum(input_tokens) AS input_tokens,
       sum(cached_input_tokens) AS cached_input_tokens,
       sum(cache_write_tokens) AS cache_write_tokens,
       sum(output_tokens) AS output_tokens,
       sum(cost_usd) AS cost_usd,
       sum(duration_s) AS total_s,
       median(duration_s) AS median_s,
       quantile_cont(duration_s, 0.95) AS p95_s
FROM llm_calls
GROUP BY ALL
ORDER BY run_id, role, model;

COMMENT ON VIEW call_costs IS 'Calls, errors, tokens (cached and cache-write ones among the input tokens), cost and latency by run, role and model.';
