-- Votes drawn from distributions: how each ballot was produced, and what the distributions imply for each tally.

ALTER TABLE ballots ADD COLUMN method VARCHAR;
ALTER TABLE ballots ADD COLUMN detail JSON;
ALTER TABLE tallies ADD COLUMN expected JSON;
ALTER TABLE tallies ADD COLUMN win_probability JSON;
ALTER TABLE tallies ADD COLUMN stability DOUBLE;
ALTER TABLE tallies ADD COLUMN redraws INTEGER;

COMMENT ON COLUMN ballots.probabilities IS 'Scored ballots: the juror''s option distribution, averaged over option orders (approval: each option''s probability of approval) (JSON).';
COMMENT ON COLUMN ballots.method IS 'What produced the ballot: scored:<how> (a vote drawn from the distribution) or structured (a parsed reply).';
COMMENT ON COLUMN ballots.detail IS 'How: option orders shown, per-order distributions, calibration prior, vote mode and draws (JSON).';
COMMENT ON COLUMN tallies.expected IS 'Expected scores per option under redraws of the votes (first-choice and approval counts: sums of probabilities) (JSON).';
COMMENT ON COLUMN tallies.win_probability IS 'Share of redraws each option wins (JSON).';
COMMENT ON COLUMN tallies.stability IS 'Share of redraws in which the realised winner wins again.';
COMMENT ON COLUMN tallies.redraws IS 'How many redraws of the jurors'' votes the expectations come from.';

-- One row per (tally, option), in the question's option order: realised score, expected score, win probability.
CREATE VIEW expected_tallies AS
SELECT t.run_id, t.phase, t.rule, o.position, o.option,
       (t.scores ->> o.option)::DOUBLE AS realised,
       (t.expected ->> o.option)::DOUBLE AS expected,
       (t.win_probability ->> o.option)::DOUBLE AS win_probability,
       t.winner IS NOT DISTINCT FROM o.option AS won
FROM tallies t
JOIN runs r ON r.id = t.run_id,
LATERAL (SELECT unnest(r.options) AS option, generate_subscripts(r.options, 1) AS position) o;

-- The verdict's stability: how often the deciding rule's post-ballot winner wins again when votes are redrawn.
CREATE VIEW verdict_stability AS
SELECT v.run_id, v.rule, v.winner, t.stability, t.redraws, t.win_probability,
       round(1 - coalesce((SELECT sum(value::DOUBLE) FROM json_each(t.win_probability)), 0), 4) AS no_winner
FROM verdicts v
JOIN tallies t ON t.run_id = v.run_id AND t.phase = 'post' AND t.rule = v.rule;

COMMENT ON VIEW expected_tallies IS 'Per tally and option (question order): the realised score, the expected score under redraws of the votes, and the probability of winning.';
COMMENT ON VIEW verdict_stability IS 'Per run: the deciding rule''s post-ballot winner and the share of redraws of the jurors'' votes in which it wins again.';
