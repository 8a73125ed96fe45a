"""Deprecated: the LangChain and LlamaIndex adapters moved to the `cdeq-client` distribution
(`cdeq_client.langchain`, `cdeq_client.llamaindex`); these modules re-export them for one
release, with a DeprecationWarning."""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType


def moved(old: str, new: str) -> ModuleType:
    """The module ``new`` of cdeq-client, after warning that ``old`` is deprecated; an
    ImportError that says how to install it when cdeq-client is missing."""
    warnings.warn(
        f"{old} is deprecated and goes in the next release: install cdeq-client "
        f"(pip install './clients/python[langchain,llamaindex]' from a clone) and import {new}",
        DeprecationWarning,
        stacklevel=3,
    )
    try:
        return importlib.import_module(new)
    except ModuleNotFoundError as exc:
        if exc.name != "cdeq_client":
            raise
        raise ImportError(
            f"{old} now re-exports {new} from the cdeq-client distribution, which is not "
            "installed: pip install './clients/python[langchain,llamaindex]' (from a clone)"
        ) from exc
