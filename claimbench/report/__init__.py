"""Reports: markdown pages and plots rendered from the cache (see claimbench.report.markdown)."""

from claimbench.report.markdown import render_reports

__all__ = ["render_reports"]
