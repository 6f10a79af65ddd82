"""Cluster: running any shardtune verb somewhere else, as a Ray job or on KubeRay.

Owns ``shardtune submit`` and ``shardtune jobs`` (``commands``): the submission plan and its
forwarded environment (``submit``, ``submit_config``), the Ray job client (``jobs``), KubeRay
manifests (``k8s``, ``templates/``) and the stdlib preflight every submitted job runs first
(``preflight``). Where a single run trains (local mode or Ray workers) is ``trainers/scaling``.

May import: ``data``, ``trainers``, ``evaluation``, ``tuning``, ``distill``. Never
``shardtune`` (the layering contract in setup.cfg fails ``make test`` on such an import).
"""
