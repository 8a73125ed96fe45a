"""The model server of the API process: one batching queue in front of `CdeEmbedder`.

A CDE stage-2 text is expensive whatever its length (every row carries the context prefix),
and a GPU is only busy when rows are many. So concurrent callers' texts are packed into
shared forwards, as Text Embeddings Inference does:

- `batcher.Batcher` is the queue: callers' checked texts wait as parts; `model_threads`
  threads each take the oldest waiting part, wait at most `max_wait_ms` for more while
  another forward runs (an idle model starts at once: no added latency at low load), and pack
  the waiting parts with the **same context and input type** (what one `embed_queries` /
  `embed_documents` call shares) up to `max_batch` texts and `max_batch_tokens` tokens — and
  no more than their share of the waiting rows, so that the other threads compute the rest
  at the same time (see `Batcher.take`; on a CPU, forwards at once also share the cores).
  Each caller gets exactly its rows, in order, with its own
  token counts and truncation flags; the model's own batching never changes a vector
  (cos ≥ 0.99999 against a text embedded alone), so packing does not either. Back-pressure:
  the tokens waiting or running are bounded by `max_queue_tokens`; over it a request gets
  `Overloaded` (HTTP 429, Retry-After from the measured rate) before anything is queued.
- `served.ServedEmbedder` *is* a `CdeEmbedder` whose `embed_queries` / `embed_documents` go
  through the batcher, with an LRU cache of query embeddings (`cache.QueryCache`) keyed by
  (model fingerprint, context digest, input type, text), so a context swap misses. Everything
  else behaves exactly as the wrapped embedder, so the use cases need not know.
"""

from app.serving.batcher import DOCUMENT, QUERY, ServeObserver
from app.serving.served import ServedEmbedder, model_fingerprint

__all__ = ["DOCUMENT", "QUERY", "ServeObserver", "ServedEmbedder", "model_fingerprint"]
