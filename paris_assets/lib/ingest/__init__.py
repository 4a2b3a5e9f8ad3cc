"""Bringing a source in: reading its table, which URLs may be fetched, img2dataset downloads, source parts."""
