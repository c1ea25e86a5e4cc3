"""asyncflow's web UI and its JSON API, over the same store as the CLI (the optional extra `ui`:
`pip install 'asyncflow-anyio[ui]'`, then `asyncflow server start`).

    from asyncflow.server import create_app      # an ASGI app: serve it with any ASGI server
    app = create_app()                           # the settings' store (ASYNCFLOW_HOME/asyncflow.db)

See docs/ui.md: the pages, the JSON API (/api/v1), live updates, actions.
"""

from __future__ import annotations

from typing import Any

_MISSING = ("The web UI needs the optional extra 'ui' (starlette, uvicorn, jinja2): "
            "pip install 'asyncflow-anyio[ui]'.")


def create_app(store: Any = None, **options: Any) -> Any:
    """The ASGI app over `store` (default: the settings' store, opened for reading when first needed)."""
    try:
        from ._app import create_app as make
    except ImportError as exc:
        raise ImportError(f"{_MISSING} ({exc})") from exc
    return make(store, **options)


__all__ = ["create_app"]
