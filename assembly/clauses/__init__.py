"""Specification clauses: a recorded assembly's decision, support, minority view and provenance as one typed record
(`assembly spec RUN`), and the comparison of two clauses on the same question (`assembly spec diff A B`).

    from assembly.clauses import clause_for, diff_clauses, render
    clause = clause_for(Store(), "latest")
    print(render(clause, "md"))
"""

from assembly.clauses.diff import diff_clauses
from assembly.clauses.model import CLAUSE_SCHEMA, DIFF_SCHEMA, Clause, ClauseDiff
from assembly.clauses.records import clause_for, clauses_for, run_clause, study_clause
from assembly.clauses.render import format_of, load_clause, render

__all__ = ["CLAUSE_SCHEMA", "DIFF_SCHEMA", "Clause", "ClauseDiff", "clause_for", "clauses_for", "diff_clauses",
           "format_of", "load_clause", "render", "run_clause", "study_clause"]
