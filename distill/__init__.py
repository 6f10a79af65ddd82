"""Distill: smaller and cheaper models from a trained one, each checked against it.

Owns knowledge distillation (``shardtune distill``: ``run``, ``objective``, ``loss``,
``teacher``, ``student``, ``augment``, ``report``, specs in ``config``), quantisation
(``shardtune quantize``: ``quant_run``, configs in ``quant_config``) and the two chained with a
gate after each (``shardtune compress``: ``compress``). It sits above ``tuning``: a student is
trained as a seed group.

May import: ``data``, ``trainers``, ``evaluation``, ``tuning``. Never ``cluster`` or
``shardtune`` (the layering contract in setup.cfg fails ``make test`` on such an import).
"""
