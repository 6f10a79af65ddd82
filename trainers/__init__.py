"""Trainers: the core that trains one run, the same way for every job kind.

Where things are:

- config: ``config`` (``TrainConfig`` and its parts), ``trainer_config`` (``trainer.*``),
  ``cluster_config``, ``quant_spec``
- the loop: ``loop`` (``train_loop``, run by Ray Train in each worker), ``schedule`` (step
  plan, optimizer, LR schedule), ``objective``, ``tasks`` (per-task metrics), ``ranking``
  (nDCG/MRR/recall, shared with ``evaluation``), ``data_loss``,
  ``progress``
- models: ``models`` (tokenizer, model, adapters, ``load_trained``), ``heads``, ``quantize``
- checkpoints: ``checkpoint`` (save, resume), ``manifest`` (names, progress.json), ``storage``
  (the object store, ``paths.store``)
- Ray runtime: ``scaling`` (start or join Ray, placement), ``collective``, ``stop`` (graceful
  stop), ``console_logs``
- the driver and its records: ``train`` (``prepare``, ``fit``), ``metadata``, ``identity``,
  ``report``, ``tracking`` (local metrics log, W&B)

May import: ``data``. Never ``evaluation``, ``tuning``, ``distill``, ``cluster`` or
``shardtune`` (the layering contract in setup.cfg fails ``make test`` on such an import).
"""
