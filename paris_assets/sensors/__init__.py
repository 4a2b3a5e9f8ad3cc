"""Sensors: thin glue over lib/outputs/alerts.py."""
