-- Descriptions kept in the catalog, so the schema section of docs/store.md is generated from a live store.

COMMENT ON TABLE schema_migrations IS 'The migrations ledger: one row per applied numbered migration.';
COMMENT ON TABLE runs IS 'One row per assembly run (simulated) or imported deliberation (real).';
COMMENT ON COLUMN runs.id IS 'ULID; every other table points here through run_id.';
COMMENT ON COLUMN runs.options IS 'The ballot options when the question has a fixed set.';
COMMENT ON COLUMN runs.spec IS 'The full assembly spec as configured (JSON).';
COMMENT ON COLUMN runs.versions IS 'Package, model and prompt versions (JSON).';
COMMENT ON COLUMN runs.status IS 'running, completed, failed or interrupted.';
COMMENT ON COLUMN runs.reason IS 'Why the run failed or was interrupted.';
COMMENT ON COLUMN runs.provenance IS 'simulated, imported-real, replay or eval.';
COMMENT ON COLUMN runs.source IS 'Dataset or system the run came from (imports).';
COMMENT ON COLUMN runs.external_id IS 'The record id of an imported deliberation.';
COMMENT ON COLUMN runs.started_at IS 'UTC.';
COMMENT ON COLUMN runs.finished_at IS 'UTC; for an interrupted run, its last recorded write.';
COMMENT ON COLUMN runs.pid IS 'Writer process id, to detect a writer that died.';
COMMENT ON COLUMN runs.pid_started IS 'Writer start time in clock ticks, guarding against pid reuse.';
COMMENT ON COLUMN runs.summary IS 'Run summary, e.g. population marginals for the report (JSON).';

COMMENT ON TABLE participants IS 'Jurors, witnesses, moderators, experts and (imported) participants of a run.';
COMMENT ON COLUMN participants.attributes IS 'Strata as given (JSON); see participant_attributes for joins.';
COMMENT ON TABLE participant_attributes IS 'One row per participant and attribute (party, age, ...), for subgroup queries.';
COMMENT ON COLUMN participant_attributes.value IS 'Text; non-string values as JSON (true, 3).';

COMMENT ON TABLE turns IS 'Everything said, one row per utterance.';
COMMENT ON COLUMN turns.seq IS 'Reading order within the run.';
COMMENT ON COLUMN turns.content IS 'The words, as plain text.';
COMMENT ON COLUMN turns.call_id IS 'The llm_calls row that produced the turn.';
COMMENT ON COLUMN turns.target IS 'What the turn answers or addresses, when anything.';

COMMENT ON TABLE ballots IS 'Private ballots before (pre) and after (post) deliberation, and final votes.';
COMMENT ON COLUMN ballots.ballot_type IS 'single, yes_no, ranked, approval, ...';
COMMENT ON COLUMN ballots.choice IS 'single / yes_no: the option; ranked: the first preference.';
COMMENT ON COLUMN ballots.probabilities IS 'A scoring backend''s option distribution (JSON).';
COMMENT ON COLUMN ballots.reason IS 'Why an abstention happened (required when status = abstain).';
COMMENT ON COLUMN ballots.target IS 'NULL: a vote on the run''s question; else on that turn or statement.';

COMMENT ON TABLE tallies IS 'One row per voting rule applied to one phase''s ballots.';
COMMENT ON COLUMN tallies.winners IS 'All tied winners before any tie-break.';
COMMENT ON COLUMN tallies.rounds IS 'Elimination rounds for IRV-like rules (JSON).';
COMMENT ON TABLE verdicts IS 'The jury''s verdict text and minority report.';

COMMENT ON TABLE llm_calls IS 'Every model call: request, response, tokens, time, attempts, errors.';
COMMENT ON COLUMN llm_calls.seq IS 'Call order within the run; replay follows it.';
COMMENT ON COLUMN llm_calls.messages IS 'The request messages (JSON).';
COMMENT ON COLUMN llm_calls.system IS 'The system message as plain text.';
COMMENT ON COLUMN llm_calls.prompt IS 'The last user message as plain text.';
COMMENT ON COLUMN llm_calls.response IS 'The model''s reply as plain text.';
COMMENT ON COLUMN llm_calls.choice_logprobs IS 'Option log-probabilities of a constrained choice (JSON).';
COMMENT ON COLUMN llm_calls.duration_s IS 'Wall time including retries.';

COMMENT ON VIEW transcript IS 'Turns in reading order with speaker names and roles.';
COMMENT ON VIEW question_ballots IS 'Each participant''s latest ballot per phase and type on the run''s question, with the options it supports.';
COMMENT ON VIEW ballot_changes IS 'Pre and post ballots side by side per participant, with a changed flag.';
COMMENT ON VIEW opinion_shift IS 'Per run, ballot type and option: share of valid ballots before and after, and the change.';
COMMENT ON VIEW opinion_shift_by_group IS 'opinion_shift within each subgroup (attribute = value).';
COMMENT ON VIEW call_costs IS 'Calls, errors, tokens, cost and latency by run, role and model.';
COMMENT ON VIEW speaking_share IS 'Turns and words per speaker, and their share of the run''s words.';
COMMENT ON VIEW run_overview IS 'One line per run: status, provenance, sizes, cost and winner.';
