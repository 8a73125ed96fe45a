"""cdeq: contextual document embeddings (cde-small-v1) served at scale with Qdrant."""

__version__ = "0.1.0"
