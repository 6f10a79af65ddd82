"""Ray Tune sweeps and ablations (planned: issue #5)."""
