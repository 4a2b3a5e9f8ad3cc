"""Sensors: thin glue over lib/alerts.py."""
