"""Fidelity evaluation: do simulated sub-groups answer like the real ones? (docs/fidelity.md)"""

from assembly.evaluation.config import DEFAULT_PAIRS, EvalConfig
from assembly.evaluation.fidelity import EvalResult, evaluate_survey
from assembly.evaluation.metrics import representativeness, steerability, total_variation, wasserstein_ordinal
from assembly.evaluation.summary import summarise
from assembly.evaluation.survey import (
    Distribution,
    Survey,
    SurveyFormatError,
    SurveyQuestion,
    load_split,
    read_questions_meta,
    read_survey,
    write_survey,
)

__all__ = [
    "DEFAULT_PAIRS",
    "Distribution",
    "EvalConfig",
    "EvalResult",
    "Survey",
    "SurveyFormatError",
    "SurveyQuestion",
    "evaluate_survey",
    "load_split",
    "read_questions_meta",
    "read_survey",
    "representativeness",
    "steerability",
    "summarise",
    "total_variation",
    "wasserstein_ordinal",
    "write_survey",
]
