"""Where the work runs: the local machine or a Ray cluster."""
