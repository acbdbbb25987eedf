"""report.html: the markdown report rendered with its figures inline, one self-contained file."""

from __future__ import annotations

import base64
import html
import logging
import re
from pathlib import Path

logger = logging.getLogger(__name__)

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       line-height: 1.45; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead { background: #f3f3f3; }
img { max-width: 100%; }
code { background: #f6f6f6; padding: 0 0.2em; }
"""


def _inline_figures(markdown_text: str, out: Path) -> str:
    """``![alt](figures/x.png)`` → the PNG as a data URI, so the page needs no other file."""
    def embed(match: re.Match) -> str:
        alt, target = match.group(1), match.group(2)
        path = out / target
        if not path.is_file():
            return match.group(0)
        data = base64.b64encode(path.read_bytes()).decode()
        return f"![{alt}](data:image/png;base64,{data})"

    return re.sub(r"!\[([^\]]*)\]\(([^)\s]+\.png)\)", embed, markdown_text)


def render_html(markdown_text: str, out: Path, title: str) -> str | None:
    """The page, or None when the ``markdown`` package (the ``plot`` extra) is missing."""
    try:
        import markdown
    except ImportError:
        logger.info("report.html skipped: install the 'plot' extra (markdown) to get it")
        return None
    body = markdown.markdown(_inline_figures(markdown_text, out), extensions=["tables"])
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
            f"<body>\n{body}\n</body></html>\n")
