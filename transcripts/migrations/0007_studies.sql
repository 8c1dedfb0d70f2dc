-- Studies: many independent juries (draws) of one question, or of each question of a bank. Every draw is an
-- ordinary run that points at its study; a re-run of a draw that did not complete supersedes the run it repeats.

CREATE TABLE studies (
    id           VARCHAR PRIMARY KEY,     -- ULID
    question     VARCHAR,                 -- the question of a one-question study; NULL for several
    questions    INTEGER NOT NULL,
    config_paths VARCHAR[] NOT NULL,      -- the question files, lists or banks given, resolved
    digest       VARCHAR NOT NULL,        -- sha256 of the plan (questions, specs, draws)
    spec         JSON,                    -- the study's settings
    draws        INTEGER NOT NULL,        -- per question
    status       VARCHAR NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'interrupted')),
    reason       VARCHAR,
    created_at   TIMESTAMP NOT NULL,
    finished_at  TIMESTAMP,
    pid          INTEGER,
    host         VARCHAR,
    pid_started  BIGINT,
    summary      JSON
);

ALTER TABLE runs ADD COLUMN study_id VARCHAR;
ALTER TABLE runs ADD COLUMN study_question VARCHAR;
ALTER TABLE runs ADD COLUMN study_draw INTEGER;
ALTER TABLE runs ADD COLUMN superseded_by VARCHAR;

COMMENT ON TABLE studies IS 'One row per study: N independent juries (draws) of each of its questions, each draw an ordinary run (runs.study_id).';
COMMENT ON COLUMN studies.id IS 'ULID; runs.study_id points here.';
COMMENT ON COLUMN studies.question IS 'The question of a one-question study; NULL when the study has several (a bank or a list).';
COMMENT ON COLUMN studies.questions IS 'How many questions the study asks.';
COMMENT ON COLUMN studies.config_paths IS 'The question files, lists (.txt) or banks (.jsonl) it was made from, resolved; a resume must name the same.';
COMMENT ON COLUMN studies.digest IS 'sha256 over every question''s key and spec and the draws: a resume must plan the same study.';
COMMENT ON COLUMN studies.spec IS 'The study''s settings: draws, seed, model, jurors, rounds, template, split, limit, concurrency, executor (JSON).';
COMMENT ON COLUMN studies.draws IS 'Draws (juries) per question.';
COMMENT ON COLUMN studies.status IS 'running, completed (every draw completed), failed (some did not) or interrupted.';
COMMENT ON COLUMN studies.reason IS 'Why it failed or was interrupted.';
COMMENT ON COLUMN studies.created_at IS 'UTC.';
COMMENT ON COLUMN studies.finished_at IS 'UTC; when it last finished (a resume clears it).';
COMMENT ON COLUMN studies.pid IS 'Writer process id, to detect a writer that died.';
COMMENT ON COLUMN studies.host IS 'Writer host; a writer that died is detected only on its own host.';
COMMENT ON COLUMN studies.pid_started IS 'Writer start time in clock ticks, guarding against pid reuse.';
COMMENT ON COLUMN studies.summary IS 'What the study reports per question: win rates per rule and option with Wilson intervals, vote shares and shifts (also by group) with bootstrap intervals, stability within and across draws (JSON).';
COMMENT ON COLUMN runs.study_id IS 'The study this run is a draw of; NULL for a run on its own.';
COMMENT ON COLUMN runs.study_question IS 'Which of the study''s questions: a question file''s resolved path, or a bank line''s id.';
COMMENT ON COLUMN runs.study_draw IS 'Which draw of that question (1..studies.draws).';
COMMENT ON COLUMN runs.superseded_by IS 'The run that re-ran this study draw (after it failed or was interrupted).';

-- One row per study run; `current` marks each (question, draw)'s latest run, the one the study counts.
CREATE VIEW study_draws AS
WITH v AS (SELECT run_id, arg_max(winner, created_at) AS winner, arg_max(rule, created_at) AS rule
           FROM verdicts GROUP BY ALL)
SELECT r.study_id, r.study_question AS question_key, r.study_draw AS draw, r.id AS run_id, r.status, r.reason,
       r.seed, r.question, r.started_at, r.finished_at, r.superseded_by,
       row_number() OVER (PARTITION BY r.study_id, r.study_question, r.study_draw
                          ORDER BY r.started_at DESC, r.id DESC) = 1 AS current,
       v.rule, v.winner, t.stability
FROM runs r
LEFT JOIN v ON v.run_id = r.id
LEFT JOIN tallies t ON t.run_id = r.id AND t.phase = 'post' AND t.rule = v.rule
WHERE r.study_id IS NOT NULL;

-- Per study, question, rule and option (question order): how many completed draws it won after deliberation.
CREATE VIEW study_win_rates AS
WITH d AS (SELECT study_id, question_key, run_id FROM study_draws WHERE current AND status = 'completed'),
     n AS (SELECT study_id, question_key, count(*) AS draws FROM d GROUP BY ALL),
     t AS (SELECT d.study_id, d.question_key, t.rule, t.winner
           FROM d JOIN tallies t ON t.run_id = d.run_id AND t.phase = 'post'),
     o AS (SELECT DISTINCT d.study_id, d.question_key, r.options FROM d JOIN runs r ON r.id = d.run_id),
     rules AS (SELECT DISTINCT study_id, question_key, rule FROM t),
     grid AS (SELECT rules.study_id, rules.question_key, rules.rule, u.position, u.option
              FROM rules JOIN o ON o.study_id = rules.study_id AND o.question_key = rules.question_key,
              LATERAL (SELECT unnest(o.options) AS option, generate_subscripts(o.options, 1) AS position) u)
SELECT g.study_id, g.question_key, g.rule, g.position, g.option,
       count(t.winner) AS wins, n.draws, count(t.winner) / any_value(n.draws) AS win_rate
FROM grid g
JOIN n ON n.study_id = g.study_id AND n.question_key = g.question_key
LEFT JOIN t ON t.study_id = g.study_id AND t.question_key = g.question_key AND t.rule = g.rule
           AND t.winner = g.option
GROUP BY g.study_id, g.question_key, g.rule, g.position, g.option, n.draws
ORDER BY g.study_id, g.question_key, g.rule, g.position;

-- Per study, question and option: mean vote shares before and after deliberation over completed draws.
CREATE VIEW study_shifts AS
SELECT d.study_id, d.question_key, s.ballot_type, s.option, count(s.delta) AS draws,
       avg(s.pre_share) AS pre_share, avg(s.post_share) AS post_share, avg(s.delta) AS shift
FROM study_draws d
JOIN opinion_shift s ON s.run_id = d.run_id
WHERE d.current AND d.status = 'completed'
GROUP BY ALL
ORDER BY ALL;

-- The same per subgroup (attribute = value): the mean over draws of the group's post-minus-pre share.
CREATE VIEW study_group_shifts AS
SELECT d.study_id, d.question_key, s.ballot_type, s.attribute, s.value, s.option, count(s.delta) AS draws,
       avg(s.pre_share) AS pre_share, avg(s.post_share) AS post_share, avg(s.delta) AS shift
FROM study_draws d
JOIN opinion_shift_by_group s ON s.run_id = d.run_id
WHERE d.current AND d.status = 'completed'
GROUP BY ALL
ORDER BY ALL;

COMMENT ON VIEW study_draws IS 'One row per run of a study: question, draw, status, the deciding rule''s winner and its verdict stability; current marks the run each (question, draw) counts (the latest).';
COMMENT ON VIEW study_win_rates IS 'Per study, question, rule and option: wins among the completed current draws and the win rate (intervals: studies.summary).';
COMMENT ON VIEW study_shifts IS 'Per study, question and option: mean pre and post vote shares over completed draws and the mean shift (draws: those with valid ballots in both phases).';
COMMENT ON VIEW study_group_shifts IS 'study_shifts within each subgroup (attribute = value): the mean over draws of the group''s post-minus-pre share.';
