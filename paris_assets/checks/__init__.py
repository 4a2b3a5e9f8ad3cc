"""Asset checks: thin glue over lib/validation.py."""
