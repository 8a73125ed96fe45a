"""Thin adapters that let RAG frameworks call a running `cdeq serve` the way CDE needs:
queries as queries, documents as documents, against a collection's own context."""
