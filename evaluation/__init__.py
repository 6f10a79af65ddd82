"""Evaluation: how good a trained model is, against what, and whether it may ship.

Owns ``shardtune evaluate`` (task metrics with bootstrap CIs, slices, errors), the TF-IDF
baseline, across-seed aggregation, the paired bootstrap of ``compare``, the reports and model
card, quality gates, serving speed, and the driver of ``data check``.

May import: ``data``, ``trainers``. Never ``tuning``, ``distill``, ``cluster`` or ``shardtune``
(the layering contract in setup.cfg fails ``make test`` on such an import).
"""
