"""Tuning: many runs of one configuration, and what they say together.

Owns seed groups (``seeds``: one configuration trained once per seed, evaluated, aggregated),
Ray Tune sweeps (``shardtune sweep``: ``sweep``, ``space``, ``sweep_report``,
``sweep_console``) and ablation campaigns (``shardtune ablate``: ``ablate``), with their
specs (``config``).

May import: ``data``, ``trainers``, ``evaluation``. Never ``distill``, ``cluster`` or
``shardtune`` (the layering contract in setup.cfg fails ``make test`` on such an import).
"""
