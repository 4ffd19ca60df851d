"""The evaluation suites behind `python -m evals.run`: datasets, scorers, judge, safety policy.

Small modules, one concern each: `dataset` (load + Great Expectations checks),
`prompts` (prompt sets as data), `target` (the model under test over HTTP),
`scorers` (deterministic text scoring), `policy` (safety policy: PII, refusals,
guardrails), `judge` (ragas metrics on a judge endpoint), `stats` (intervals),
`quality` and `safety` (the two suites).
"""
