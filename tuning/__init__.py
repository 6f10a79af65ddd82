"""Ray Tune sweeps (``shardtune sweep``) and ablation campaigns (``shardtune ablate``)."""
