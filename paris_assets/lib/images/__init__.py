"""One image decoded into an upright square crop, and the image filter over raw shards (media: image)."""
