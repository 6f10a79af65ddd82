"""Data: from files to tokenised Ray Datasets, with every row that is lost counted.

Owns reading shards (local or any fsspec URI: ``shards``), validation and the split summaries
(``labels``, ``summary``), splitting, dedup and PII redaction (``pipeline``, ``check``,
``pii``), small data held and mapped in the driver (``inprocess``; ``local``: without Ray),
tokenisation, chats and packing (``tokenize``, ``chat``, ``packing``), the loop's batches
(``batches``), model locations (``locations``, ``gguf``), ``DataConfig`` and the user-facing
errors every other package raises (``errors``). Kept importable without Ray started so that
config validation stays cheap.

May import: no other shardtune package: ``data`` is the bottom layer (the layering contract in
setup.cfg fails ``make test`` on such an import).
"""
