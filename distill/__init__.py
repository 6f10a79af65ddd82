"""Model compression: knowledge distillation (``shardtune distill``); quantisation: planned."""
