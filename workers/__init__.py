"""Celery workers: thin adapters that run ingest batches through the use cases in app/."""
