"""Reports: markdown pages and plots rendered from the cache (see repro.report.markdown)."""

from repro.report.markdown import render_reports

__all__ = ["render_reports"]
