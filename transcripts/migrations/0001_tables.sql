-- Tables of the assembly store. Every row reaches its run through run_id in one join.
-- Checked strings instead of ENUM types: adding a value later is a new CHECK, not a type migration.
-- Times are UTC (TIMESTAMP without zone). JSON columns hold structured values; literal text has plain columns.

CREATE TABLE runs (
    id          VARCHAR PRIMARY KEY,          -- ULID
    question    VARCHAR NOT NULL,
    options     VARCHAR[],                    -- the ballot options, when the question has a fixed set
    spec        JSON,                         -- the full assembly spec as configured
    seed        BIGINT,
    versions    JSON,                         -- package / model / prompt versions
    config_path VARCHAR,
    status      VARCHAR NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'interrupted')),
    reason      VARCHAR,                      -- why it failed or was interrupted
    provenance  VARCHAR NOT NULL CHECK (provenance IN ('simulated', 'imported-real', 'replay', 'eval')),
    source      VARCHAR,                      -- dataset or system the run came from
    license     VARCHAR,
    external_id VARCHAR,                      -- the record id of an imported deliberation
    started_at  TIMESTAMP NOT NULL,
    finished_at TIMESTAMP,
    pid         INTEGER,                      -- writer process, to detect a writer that died
    host        VARCHAR,
    pid_started BIGINT,                       -- writer's start time (clock ticks), guards against pid reuse
    summary     JSON
);

CREATE TABLE participants (
    run_id     VARCHAR NOT NULL,
    id         VARCHAR NOT NULL,              -- e.g. juror-01, unique within the run
    role       VARCHAR NOT NULL CHECK (role IN ('juror', 'witness', 'moderator', 'expert', 'participant')),
    name       VARCHAR,
    persona    VARCHAR,
    attributes JSON,                          -- as given (values may be non-strings in imports)
    extra      JSON,
    PRIMARY KEY (run_id, id)
);

-- One row per (participant, attribute): strata join here, e.g. opinion shift by party.
CREATE TABLE participant_attributes (
    run_id         VARCHAR NOT NULL,
    participant_id VARCHAR NOT NULL,
    attribute      VARCHAR NOT NULL,
    value          VARCHAR
);

CREATE TABLE turns (
    id         VARCHAR NOT NULL,              -- ULID
    run_id     VARCHAR NOT NULL,
    seq        INTEGER NOT NULL,              -- reading order within the run
    phase      VARCHAR NOT NULL,
    round      INTEGER,
    speaker_id VARCHAR NOT NULL,
    content    VARCHAR NOT NULL,
    call_id    VARCHAR,                       -- the llm_calls row that produced it
    target     VARCHAR,                       -- what it answers or addresses (a turn index, a participant id)
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE ballots (
    id             VARCHAR NOT NULL,
    run_id         VARCHAR NOT NULL,
    participant_id VARCHAR NOT NULL,
    phase          VARCHAR NOT NULL CHECK (phase IN ('pre', 'post', 'final')),
    ballot_type    VARCHAR NOT NULL,          -- single, yes_no, ranked, approval, ...
    status         VARCHAR NOT NULL CHECK (status IN ('valid', 'abstain')),
    choice         VARCHAR,                   -- single / yes_no: the option; ranked: first preference
    ranking        VARCHAR[],
    approvals      VARCHAR[],
    probabilities  JSON,
    rationale      VARCHAR,
    reason         VARCHAR,                   -- why an abstention happened
    attempts       INTEGER NOT NULL DEFAULT 1,
    target         VARCHAR,                   -- NULL: a vote on the run's question; else on a turn/statement
    created_at     TIMESTAMP NOT NULL,
    CHECK (status = 'valid' OR reason IS NOT NULL)
);

CREATE TABLE tallies (
    id         VARCHAR NOT NULL,
    run_id     VARCHAR NOT NULL,
    phase      VARCHAR NOT NULL,
    rule       VARCHAR NOT NULL,              -- plurality, borda, approval, ...
    winner     VARCHAR,
    winners    VARCHAR[],                     -- all tied winners before any tie-break
    scores     JSON,
    rounds     JSON,                          -- elimination rounds (IRV and friends)
    tie_break  VARCHAR,
    valid      INTEGER NOT NULL,
    abstained  INTEGER NOT NULL,
    explain    VARCHAR,
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE verdicts (
    id              VARCHAR NOT NULL,
    run_id          VARCHAR NOT NULL,
    text            VARCHAR NOT NULL,
    minority_report VARCHAR,
    winner          VARCHAR,
    rule            VARCHAR,
    created_at      TIMESTAMP NOT NULL
);

CREATE TABLE llm_calls (
    id              VARCHAR NOT NULL,         -- ULID
    run_id          VARCHAR NOT NULL,
    seq             INTEGER NOT NULL,         -- call order within the run (replay follows it)
    model           VARCHAR NOT NULL,
    role            VARCHAR,
    participant_id  VARCHAR,
    phase           VARCHAR,
    request_hash    VARCHAR NOT NULL,
    messages        JSON NOT NULL,
    system          VARCHAR,                  -- the system message, as plain text
    prompt          VARCHAR,                  -- the last user message, as plain text
    params          JSON,
    response        VARCHAR,
    choice          VARCHAR,
    choice_logprobs JSON,
    input_tokens    INTEGER NOT NULL DEFAULT 0,
    output_tokens   INTEGER NOT NULL DEFAULT 0,
    duration_s      DOUBLE NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 1,
    error           VARCHAR,
    seed            BIGINT,
    cost_usd        DOUBLE,
    created_at      TIMESTAMP NOT NULL
);
