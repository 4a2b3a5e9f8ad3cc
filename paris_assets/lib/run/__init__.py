"""Running the model stages: batching kept rows through a role in chunks, crops read back, progress lines."""
