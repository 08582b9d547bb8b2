"""The Markdown an editor may use in summaries and intros, as HTML and as plain text.

CommonMark (markdown-it-py) with raw HTML switched off: editor text is data, so a
`<script>` in a summary comes out as text, and only http(s) and mailto links survive.
Every block carries dir="auto": an English paragraph in a Hebrew newsletter (or the
reverse) takes its own direction, so its full stop stays at its end.
"""

from __future__ import annotations

import textwrap
from functools import lru_cache

from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from markdown_it.token import Token
from markupsafe import Markup

_SAFE_SCHEMES = ("http://", "https://", "mailto:")
#: The blocks that hold a run of the editor's text, each set in the direction of its own.
_OWN_DIRECTION = {
    "paragraph_open",
    "heading_open",
    "bullet_list_open",
    "ordered_list_open",
    "blockquote_open",
}


def _dir_auto(state: StateCore) -> None:
    for token in state.tokens:
        if token.type in _OWN_DIRECTION:
            token.attrSet("dir", "auto")


@lru_cache(maxsize=2)
def _md(strict: bool = True) -> MarkdownIt:
    """The renderer; `strict=False` keeps every link so the preflight can point at bad ones."""
    # linkify: a bare URL becomes a link (and a place a mail client may wrap it). Only URLs
    # with their scheme: fuzzy matching would turn "Node.js" or "Ask.fm" in a summary into links.
    md = MarkdownIt("commonmark", {"html": False, "linkify": True, "typographer": False})
    md.enable("linkify")
    assert md.linkify is not None  # linkify-it-py is a dependency
    md.linkify.set({"fuzzy_link": False, "fuzzy_email": False})
    md.core.ruler.push("dir_auto", _dir_auto)
    if strict:
        md.validateLink = lambda url: url.strip().lower().startswith(_SAFE_SCHEMES)  # type: ignore[method-assign]
    else:
        md.validateLink = lambda url: True  # type: ignore[method-assign]
    return md


def to_html(text: str) -> Markup:
    """Block Markdown (paragraphs, lists) to HTML."""
    return Markup(_md().render(text).strip())


def inline_html(text: str) -> Markup:
    """Inline Markdown (bold, italics, links) to HTML, with paragraphs joined by <br>."""
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    return Markup("<br><br>".join(_md().renderInline(p.strip()) for p in paragraphs))


def links(text: str) -> list[tuple[str, str]]:
    """Every link in `text` as (href, link text), including ones the renderer would drop."""
    found: list[tuple[str, str]] = []
    for block in _md(strict=False).parse(text):
        for tok, nxt in _pairs(block.children or []):
            if tok.type == "link_open":
                found.append((str(tok.attrGet("href") or ""), nxt.content if nxt else ""))
    return found


def images(text: str) -> list[tuple[str, str]]:
    """Every image in `text` as (src, alt)."""
    found: list[tuple[str, str]] = []
    for block in _md(strict=False).parse(text):
        for tok in block.children or []:
            if tok.type == "image":
                found.append((str(tok.attrGet("src") or ""), tok.content))
    return found


def _pairs(tokens: list[Token]) -> list[tuple[Token, Token | None]]:
    return [(t, tokens[i + 1] if i + 1 < len(tokens) else None) for i, t in enumerate(tokens)]


def to_text(text: str) -> str:
    """Markdown to readable plain text: *bold*, _italic_, and links written out as `text (url)`."""
    out: list[str] = []
    for block in _md().parse(text):
        if block.type == "inline":
            out.append(_inline_text(block.children or []))
        elif block.type in ("paragraph_close", "heading_close", "bullet_list_close"):
            out.append("\n\n")
        elif block.type == "list_item_open":
            out.append("- ")
        elif block.type == "list_item_close":
            out.append("\n")
        elif block.type in ("code_block", "fence"):
            out.append(block.content + "\n")
    paragraphs = [p.strip() for p in "".join(out).split("\n\n")]
    return "\n\n".join(p for p in paragraphs if p)


def _inline_text(tokens: list[Token]) -> str:
    parts: list[str] = []
    href_stack: list[str] = []
    for tok in tokens:
        kind = tok.type
        if kind in ("text", "code_inline"):
            parts.append(tok.content)
        elif kind == "softbreak":
            parts.append(" ")
        elif kind == "hardbreak":
            parts.append("\n")
        elif kind in ("strong_open", "strong_close", "em_open", "em_close"):
            parts.append("*" if kind.startswith("strong") else "_")
        elif kind == "link_open":
            href_stack.append(str(tok.attrGet("href") or ""))
        elif kind == "link_close" and href_stack:
            href = href_stack.pop()
            label = href.removeprefix("mailto:")
            if not "".join(parts).endswith(label):
                parts.append(f" ({href.removeprefix('mailto:')})")
        elif kind == "image":
            parts.append(f"[{tok.content}]" if tok.content else "")
    return "".join(parts)


def fill(text: str, width: int = 72, indent: str = "") -> str:
    """Wrap each paragraph at `width` columns without ever breaking a URL or a word."""
    paragraphs = text.split("\n\n")
    wrapped = [
        "\n".join(
            textwrap.fill(
                line,
                width=width,
                initial_indent=indent,
                subsequent_indent=indent,
                break_long_words=False,
                break_on_hyphens=False,
            )
            for line in paragraph.split("\n")
        )
        for paragraph in paragraphs
    ]
    return "\n\n".join(wrapped)
