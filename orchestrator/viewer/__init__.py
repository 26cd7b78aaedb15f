"""The trace viewer: runs, span trees, candidates, plots and comparisons in a browser.

It reads the store only. ``make_viewer_router`` is mounted by ``ttc serve``;
``viewer_app`` runs it alone (``ttc traces serve``). The page is plain JavaScript and CSS
shipped as package data (``static/``), under ``Content-Security-Policy: default-src 'self'``;
it puts every text from the store into the DOM as text, never as markup.
"""

from .app import ASSETS, make_viewer_router, viewer_app

__all__ = ["ASSETS", "make_viewer_router", "viewer_app"]
