"""One video decoded into a clip at a fixed rate, judged, re-encoded; the clip filter; previews (media: video)."""
