"""Model compression: distillation and quantisation (planned: issues #6, #7)."""
