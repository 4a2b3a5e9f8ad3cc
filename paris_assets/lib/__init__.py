"""Plain functions over arrays, tables and files: no Dagster, no torch, no Settings object. One room per concern:

- ingest/: sources, URL policy, img2dataset downloads, source parts, the loopback file server
- images/: one image decoded, checked and cropped; the image filter over raw shards
- video/: one clip decoded, judged and re-encoded; the clip filter; animated previews
- quality/: quality signals, caption filters, what cluster_labels prunes
- dedup/: pHash near duplicates, SemDeDup, decontamination against protected sets
- clustering/: two-stage k-means, the cluster report, the quality gate
- outputs/: expert shards, router arrays, manifest, tars, the shard index, validation, the dataset card
- store/: atomic folders on any filesystem, chunked arrays, resumable chunks, process identity
- run/: the model stages' batching, crops read back, progress lines
- demo/: the built-in demo sources (images, clips)
- plan/: FLOPs per model and the run planner
"""
