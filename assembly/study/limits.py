"""A study's bounds and defaults (the CLI's help names them without importing the runner)."""

MAX_DRAWS = 1000  # per question: past this, a study's intervals are far narrower than the model's own biases
MAX_CONCURRENCY = 64
DEFAULT_DRAWS = 20
DEFAULT_CONCURRENCY = 8
EXECUTORS = ("local", "ray")
