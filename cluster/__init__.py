"""Where a job runs: in-process local mode, a multi-worker Ray job, or (later) KubeRay."""
