"""Storage: atomic folders on any fsspec filesystem, chunked arrays, resumable chunks, process identity."""
