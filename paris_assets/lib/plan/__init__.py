"""Planning a run past this machine: FLOPs per model from configs, and the planner over plain inputs."""
