-- Readable views. They read only base tables, so any of them can be replaced by a later migration.

-- The deliberation in reading order, with who spoke.
CREATE VIEW transcript AS
SELECT t.run_id, t.seq, t.phase, t.round, t.speaker_id, p.name AS speaker, p.role AS speaker_role,
       t.content, t.target, t.call_id, t.id AS turn_id
FROM turns t
LEFT JOIN participants p ON p.run_id = t.run_id AND p.id = t.speaker_id
ORDER BY t.run_id, t.seq;

-- The latest ballot of each participant per (phase, ballot type) on the run's question (target IS NULL),
-- with the options it supports: the choice (or first preference), or every approved option.
CREATE VIEW question_ballots AS
SELECT b.*,
       CASE WHEN b.status <> 'valid' THEN []::VARCHAR[]
            WHEN b.approvals IS NOT NULL THEN b.approvals
            WHEN coalesce(b.choice, b.ranking[1]) IS NULL THEN []::VARCHAR[]
            ELSE [coalesce(b.choice, b.ranking[1])] END AS supports
FROM ballots b
WHERE b.target IS NULL
QUALIFY row_number() OVER (PARTITION BY b.run_id, b.participant_id, b.phase, b.ballot_type
                           ORDER BY b.created_at DESC, b.id DESC) = 1;

-- Pre and post ballots side by side per participant; changed is NULL when one side is missing.
CREATE VIEW ballot_changes AS
WITH pre AS (SELECT * FROM question_ballots WHERE phase = 'pre'),
     post AS (SELECT * FROM question_ballots WHERE phase = 'post')
SELECT coalesce(pre.run_id, post.run_id) AS run_id,
       coalesce(pre.participant_id, post.participant_id) AS participant_id,
       p.name, p.role,
       coalesce(pre.ballot_type, post.ballot_type) AS ballot_type,
       pre.status AS pre_status, post.status AS post_status,
       coalesce(pre.choice, pre.ranking[1]) AS pre_choice, coalesce(post.choice, post.ranking[1]) AS post_choice,
       pre.ranking AS pre_ranking, post.ranking AS post_ranking,
       pre.approvals AS pre_approvals, post.approvals AS post_approvals,
       CASE WHEN pre.id IS NULL OR post.id IS NULL THEN NULL
            ELSE pre.status IS DISTINCT FROM post.status
              OR pre.choice IS DISTINCT FROM post.choice
              OR pre.ranking IS DISTINCT FROM post.ranking
              OR list_sort(pre.approvals) IS DISTINCT FROM list_sort(post.approvals) END AS changed,
       pre.rationale AS pre_rationale, post.rationale AS post_rationale
FROM pre
FULL OUTER JOIN post
  ON pre.run_id = post.run_id AND pre.participant_id = post.participant_id AND pre.ballot_type = post.ballot_type
LEFT JOIN participants p
  ON p.run_id = coalesce(pre.run_id, post.run_id) AND p.id = coalesce(pre.participant_id, post.participant_id);

-- Per run, ballot type and option: the share of valid ballots supporting it before and after deliberation.
-- Options of the run's question with no support appear with share 0.
CREATE VIEW opinion_shift AS
WITH valid AS (SELECT * FROM question_ballots WHERE status = 'valid' AND phase IN ('pre', 'post')),
     support AS (SELECT run_id, ballot_type, phase, unnest(supports) AS option FROM valid),
     totals AS (SELECT run_id, ballot_type, phase, count(*) AS n FROM valid GROUP BY ALL),
     types AS (SELECT DISTINCT run_id, ballot_type FROM valid),
     options AS (SELECT run_id, ballot_type, option FROM support
                 UNION
                 SELECT t.run_id, t.ballot_type, unnest(r.options) FROM types t JOIN runs r ON r.id = t.run_id),
     counts AS (SELECT run_id, ballot_type, option,
                       count(*) FILTER (WHERE phase = 'pre') AS pre_votes,
                       count(*) FILTER (WHERE phase = 'post') AS post_votes
                FROM support GROUP BY ALL)
SELECT o.run_id, o.ballot_type, o.option,
       coalesce(c.pre_votes, 0) AS pre_votes, coalesce(tp.n, 0) AS pre_valid,
       coalesce(c.pre_votes, 0) / nullif(tp.n, 0) AS pre_share,
       coalesce(c.post_votes, 0) AS post_votes, coalesce(tq.n, 0) AS post_valid,
       coalesce(c.post_votes, 0) / nullif(tq.n, 0) AS post_share,
       coalesce(c.post_votes, 0) / nullif(tq.n, 0) - coalesce(c.pre_votes, 0) / nullif(tp.n, 0) AS delta
FROM options o
LEFT JOIN counts c USING (run_id, ballot_type, option)
LEFT JOIN totals tp ON tp.run_id = o.run_id AND tp.ballot_type = o.ballot_type AND tp.phase = 'pre'
LEFT JOIN totals tq ON tq.run_id = o.run_id AND tq.ballot_type = o.ballot_type AND tq.phase = 'post'
ORDER BY o.run_id, o.ballot_type, o.option;

-- The same shift within each subgroup (attribute = value), e.g. party = 'Democrat'.
CREATE VIEW opinion_shift_by_group AS
WITH valid AS (SELECT b.*, a.attribute, a.value
               FROM question_ballots b
               JOIN participant_attributes a ON a.run_id = b.run_id AND a.participant_id = b.participant_id
               WHERE b.status = 'valid' AND b.phase IN ('pre', 'post')),
     support AS (SELECT run_id, ballot_type, attribute, value, phase, unnest(supports) AS option FROM valid),
     totals AS (SELECT run_id, ballot_type, attribute, value, phase, count(*) AS n FROM valid GROUP BY ALL),
     groups AS (SELECT DISTINCT run_id, ballot_type, attribute, value FROM valid),
     options AS (SELECT run_id, ballot_type, attribute, value, option FROM support
                 UNION
                 SELECT g.run_id, g.ballot_type, g.attribute, g.value, unnest(r.options)
                 FROM groups g JOIN runs r ON r.id = g.run_id),
     counts AS (SELECT run_id, ballot_type, attribute, value, option,
                       count(*) FILTER (WHERE phase = 'pre') AS pre_votes,
                       count(*) FILTER (WHERE phase = 'post') AS post_votes
                FROM support GROUP BY ALL)
SELECT o.run_id, o.ballot_type, o.attribute, o.value, o.option,
       coalesce(c.pre_votes, 0) AS pre_votes, coalesce(tp.n, 0) AS pre_valid,
       coalesce(c.pre_votes, 0) / nullif(tp.n, 0) AS pre_share,
       coalesce(c.post_votes, 0) AS post_votes, coalesce(tq.n, 0) AS post_valid,
       coalesce(c.post_votes, 0) / nullif(tq.n, 0) AS post_share,
       coalesce(c.post_votes, 0) / nullif(tq.n, 0) - coalesce(c.pre_votes, 0) / nullif(tp.n, 0) AS delta
FROM options o
LEFT JOIN counts c USING (run_id, ballot_type, attribute, value, option)
LEFT JOIN totals tp ON tp.run_id = o.run_id AND tp.ballot_type = o.ballot_type AND tp.attribute = o.attribute
                   AND tp.value IS NOT DISTINCT FROM o.value AND tp.phase = 'pre'
LEFT JOIN totals tq ON tq.run_id = o.run_id AND tq.ballot_type = o.ballot_type AND tq.attribute = o.attribute
                   AND tq.value IS NOT DISTINCT FROM o.value AND tq.phase = 'post'
ORDER BY o.run_id, o.ballot_type, o.attribute, o.value, o.option;

-- Cost, latency and tokens by run, role and model.
CREATE VIEW call_costs AS
SELECT run_id, role, model,
       count(*) AS calls,
       count(error) AS errors,
       sum(attempts) AS attempts,
       sum(input_tokens) AS input_tokens,
       sum(output_tokens) AS output_tokens,
       sum(cost_usd) AS cost_usd,
       sum(duration_s) AS total_s,
       median(duration_s) AS median_s,
       quantile_cont(duration_s, 0.95) AS p95_s
FROM llm_calls
GROUP BY ALL
ORDER BY run_id, role, model;

-- Who spoke how much: turns and words per speaker, and their share of the run's words.
CREATE VIEW speaking_share AS
WITH w AS (SELECT run_id, speaker_id, count(*) AS turns,
                  sum(len(string_split_regex(trim(content), '\s+'))) AS words
           FROM turns GROUP BY ALL)
SELECT w.run_id, w.speaker_id, p.name, p.role, w.turns, w.words,
       w.words / sum(w.words) OVER (PARTITION BY w.run_id) AS word_share
FROM w
LEFT JOIN participants p ON p.run_id = w.run_id AND p.id = w.speaker_id
ORDER BY w.run_id, w.words DESC;

-- One line per run: what it was, how it ended and how big it is.
CREATE VIEW run_overview AS
WITH p AS (SELECT run_id, count(*) AS participants FROM participants GROUP BY ALL),
     t AS (SELECT run_id, count(*) AS turns FROM turns GROUP BY ALL),
     b AS (SELECT run_id, count(*) AS ballots FROM ballots GROUP BY ALL),
     c AS (SELECT run_id, count(*) AS calls, sum(cost_usd) AS cost_usd FROM llm_calls GROUP BY ALL),
     v AS (SELECT run_id, arg_max(winner, created_at) AS winner FROM verdicts GROUP BY ALL)
SELECT r.id AS run_id, r.status, r.provenance, r.source, r.started_at, r.finished_at,
       date_diff('millisecond', r.started_at, r.finished_at) / 1000.0 AS duration_s,
       r.question,
       coalesce(p.participants, 0) AS participants, coalesce(t.turns, 0) AS turns,
       coalesce(b.ballots, 0) AS ballots, coalesce(c.calls, 0) AS calls, c.cost_usd, v.winner
FROM runs r
LEFT JOIN p ON p.run_id = r.id
LEFT JOIN t ON t.run_id = r.id
LEFT JOIN b ON b.run_id = r.id
LEFT JOIN c ON c.run_id = r.id
LEFT JOIN v ON v.run_id = r.id
ORDER BY r.started_at DESC, r.id DESC;
