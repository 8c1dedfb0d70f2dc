-- Natural keys, one row each, so that a node re-run after `assembly run --resume` writes nothing twice:
-- turns (run_id, seq), tallies (run_id, phase, rule), verdicts (run_id), llm_calls (run_id, seq).
-- Ballots get no constraint: imports may hold re-votes (question_ballots reads the latest), and a key with a NULL
-- target would not be held by one anyway; the write API records one per (run, participant, phase, type, target).

ALTER TABLE turns ADD UNIQUE (run_id, seq);
ALTER TABLE tallies ADD UNIQUE (run_id, phase, rule);
ALTER TABLE verdicts ADD UNIQUE (run_id);

-- llm_calls.seq used to be taken outside the store's lock, so two threads could give two calls of one run the same
-- number: such runs' calls are renumbered in their recorded order (every row is kept; turns point at calls by id).
-- DuckDB cannot add a constraint to a table updated in the same transaction, so the table is rebuilt (columns,
-- defaults and comments as migrations 0001, 0003 and 0005 left them; the views that read it bind by name).
CREATE TABLE llm_calls_keyed (
    id                  VARCHAR NOT NULL,
    run_id              VARCHAR NOT NULL,
    seq                 INTEGER NOT NULL,
    model               VARCHAR NOT NULL,
    role                VARCHAR,
    participant_id      VARCHAR,
    phase               VARCHAR,
    request_hash        VARCHAR NOT NULL,
    messages            JSON NOT NULL,
    system              VARCHAR,
    prompt              VARCHAR,
    params              JSON,
    response            VARCHAR,
    choice              VARCHAR,
    choice_logprobs     JSON,
    input_tokens        INTEGER NOT NULL DEFAULT 0,
    output_tokens       INTEGER NOT NULL DEFAULT 0,
    duration_s          DOUBLE NOT NULL DEFAULT 0,
    attempts            INTEGER NOT NULL DEFAULT 1,
    error               VARCHAR,
    seed                BIGINT,
    cost_usd            DOUBLE,
    created_at          TIMESTAMP NOT NULL,
    cached_input_tokens INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens  INTEGER NOT NULL DEFAULT 0,
    UNIQUE (run_id, seq)
);
INSERT INTO llm_calls_keyed
SELECT * REPLACE (
    CASE WHEN run_id IN (SELECT run_id FROM llm_calls GROUP BY run_id, seq HAVING count(*) > 1)
         THEN row_number() OVER (PARTITION BY run_id ORDER BY seq, created_at, id)::INTEGER
         ELSE seq END AS seq)
FROM llm_calls;
DROP TABLE llm_calls;
ALTER TABLE llm_calls_keyed RENAME TO llm_calls;

COMMENT ON TABLE llm_calls IS 'Every model call: request, response, tokens, time, attempts, errors.';
COMMENT ON COLUMN llm_calls.seq IS 'Call order within the run (replay follows it); one call per (run_id, seq).';
COMMENT ON COLUMN llm_calls.messages IS 'The request messages (JSON).';
COMMENT ON COLUMN llm_calls.system IS 'The system message as plain text.';
COMMENT ON COLUMN llm_calls.prompt IS 'The last user message as plain text.';
COMMENT ON COLUMN llm_calls.response IS 'The model''s reply as plain text.';
COMMENT ON COLUMN llm_calls.choice_logprobs IS 'Option log-probabilities of a constrained choice (JSON).';
COMMENT ON COLUMN llm_calls.input_tokens IS 'Every prompt token sent, cached ones included.';
COMMENT ON COLUMN llm_calls.duration_s IS 'Wall time including retries.';
COMMENT ON COLUMN llm_calls.cost_usd IS 'USD from the price table, cached and cache-write tokens at their own rates; NULL: no price known.';
COMMENT ON COLUMN llm_calls.cached_input_tokens IS 'Prompt tokens not computed again: a provider''s prompt-cache read (OpenAI cached_tokens, Anthropic cache_read_input_tokens) or the local backend''s reused prefix. Part of input_tokens.';
COMMENT ON COLUMN llm_calls.cache_write_tokens IS 'Prompt tokens written to a provider''s prompt cache (Anthropic cache_creation_input_tokens, billed above the input price). Part of input_tokens.';

COMMENT ON COLUMN turns.seq IS 'Reading order within the run; one turn per (run_id, seq).';
COMMENT ON TABLE tallies IS 'One row per voting rule applied to one phase''s ballots; one per (run_id, phase, rule).';
COMMENT ON TABLE verdicts IS 'The jury''s verdict text and minority report; one per run.';
