"""The HTTP entry point: an OpenAI-compatible /v1/embeddings plus collection, job and search
routes over the same use cases as the CLI (thin: parse, call a use case, map errors)."""

from app.api.server import create_app, serve

__all__ = ["create_app", "serve"]
