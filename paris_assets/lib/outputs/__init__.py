"""What training reads: expert shards, router arrays, the manifest, tars, the shard index, checks, the card."""
