"""Asset checks: thin glue over lib/outputs/validation.py."""
