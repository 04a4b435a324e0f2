"""Read a rendered page the way its reader does: text, sections, tables, figures, links.

The report tests assert on what a page shows and does (a value next to its label, a row of a
table under its column headers, an image in a gallery card, where a link points), not on the
markup that happens to carry it, so that a renamed class or an extra wrapper ``<div>`` breaks
no test. Only the standard library's :class:`html.parser.HTMLParser` is used.

Text is what a browser would show: character references decoded, whitespace collapsed to
single spaces, block elements (paragraphs, cells, list items, ...) separated by a space, and
nothing from ``<head>``, ``<script>`` or ``<style>``. The text inside an ``<svg>`` is left
out unless asked for (or unless the element asked is the figure itself).

A *section* is what follows a heading up to the next heading of the same or a higher level
(or the end of the ``<section>``, ``<main>``, ... holding the heading), as a reader sees the
outline, whatever elements wrap it.

Examples
--------
>>> page = parse('<h2>Cards</h2><div><b>3</b></div><div>PIEs</div>'
...              '<h2>Rows</h2><table id="t"><tr><th>a</th></tr>'
...              '<tr><td data-v="0.5">50%</td></tr></table>')
>>> page.section("Cards").text
'3 PIEs'
>>> page.table("Rows").records[0]["a"]
Cell(text='50%', key='0.5', href=None)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser

__all__ = ["Cell", "Element", "Image", "Link", "Page", "Section", "Table", "parse"]

_VOID = frozenset("area base br col embed hr img input link meta source track wbr".split())
#: Elements whose boundaries separate words (a browser puts them on their own line or box).
_BLOCK = frozenset(
    """address article aside blockquote body br caption dd details div dl dt figcaption figure
    footer h1 h2 h3 h4 h5 h6 header hr li main nav ol p pre section summary table tbody td tfoot
    th thead tr ul text""".split()
)
#: Elements whose text the reader never sees.
_HIDDEN = frozenset({"head", "script", "style", "template"})
_HEADINGS = {f"h{n}": n for n in range(1, 7)}
#: Elements whose headings do not reach past their end.
_SECTIONING = frozenset({"article", "aside", "main", "nav", "section"})


def _collapse(text: str) -> str:
    return " ".join(text.split())


@dataclass(frozen=True)
class _Chunk:
    text: str
    hidden: bool
    in_svg: bool
    outline: tuple[Element, ...]


@dataclass(frozen=True)
class Link:
    """A hyperlink: where it points and the text the reader clicks."""

    href: str
    text: str


@dataclass(frozen=True)
class Image:
    """An ``<img>``: its source and its text alternative."""

    src: str
    alt: str


@dataclass(frozen=True)
class Cell:
    """A table cell.

    Attributes
    ----------
    text : str
        The cell's visible text.
    key : str or None
        The value the table sorter sorts the column by (``data-v``); ``None`` when the cell
        sorts by its text, ``""`` when its value is undefined (sorted last).
    href : str or None
        Where the cell's first link points, if it has one.
    """

    text: str
    key: str | None
    href: str | None


class _View:
    """Queries shared by the page, its sections and its elements."""

    _page: Page

    def _elements(self) -> Iterator[Element]:
        raise NotImplementedError

    def _chunks(self) -> Iterator[_Chunk]:
        raise NotImplementedError

    def _keep_svg(self) -> bool:
        return False

    def get_text(self, *, svg: bool = False) -> str:
        """The visible text, whitespace collapsed; with ``svg=True`` also the figures' text."""
        svg = svg or self._keep_svg()
        return _collapse("".join(c.text for c in self._chunks() if not c.hidden and (svg or not c.in_svg)))

    @property
    def text(self) -> str:
        """The visible text, whitespace collapsed, without the text inside figures (SVG)."""
        return self.get_text()

    def find_all(self, tag: str | None = None, **attrs: str) -> list[Element]:
        """Elements in document order, optionally of one tag and with these attribute values."""
        return [
            e
            for e in self._elements()
            if (tag is None or e.tag == tag) and all(e.attrs.get(k) == v for k, v in attrs.items())
        ]

    @property
    def headings(self) -> list[str]:
        """The text of every heading (h1 to h6), in order."""
        return [e.text for e in self._elements() if e.tag in _HEADINGS]

    def section(self, heading: str) -> Section:
        """What follows the heading whose text is exactly ``heading``, up to the next heading
        of the same or a higher level.

        Raises
        ------
        KeyError
            When no heading, or more than one, has that text.
        """
        found = [e for e in self._elements() if e.tag in _HEADINGS and e.text == heading]
        if len(found) != 1:
            raise KeyError(f"{len(found)} headings {heading!r} among {self.headings}")
        return Section(self._page, found[0])

    @property
    def tables(self) -> list[Table]:
        """Every table, in document order."""
        return [Table(e) for e in self.find_all("table")]

    def table(self, name: str) -> Table:
        """The table whose id or caption is ``name``, else the only table under heading ``name``.

        Raises
        ------
        KeyError
            When that does not single out one table.
        """
        tables = self.tables
        found = [t for t in tables if t.element.attrs.get("id") == name or t.caption == name]
        if not found and name in self.headings:
            found = self.section(name).tables
        if len(found) != 1:
            raise KeyError(f"{len(found)} tables named {name!r}")
        return found[0]

    @property
    def links(self) -> list[Link]:
        """Every ``<a href>``: its target and text."""
        return [Link(e.attrs["href"], e.text) for e in self.find_all("a") if "href" in e.attrs]

    @property
    def images(self) -> list[Image]:
        """Every ``<img>``: its src and alt."""
        return [Image(e.attrs.get("src", ""), e.attrs.get("alt", "")) for e in self.find_all("img")]

    @property
    def figures(self) -> list[Element]:
        """Every ``<figure>`` (a plot, a gallery card), in order."""
        return self.find_all("figure")

    @property
    def svgs(self) -> list[Element]:
        """Every inline SVG figure, in order; its ``label`` is its ``aria-label``."""
        return self.find_all("svg")

    def svg(self, label: str) -> Element:
        """The SVG figure whose ``aria-label`` is ``label``."""
        found = [e for e in self.svgs if e.label == label]
        if len(found) != 1:
            raise KeyError(f"{len(found)} figures {label!r} among {[e.label for e in self.svgs]}")
        return found[0]

    def definitions(self) -> list[tuple[str, str]]:
        """The (term, description) pairs of the description lists (``<dt>``/``<dd>``), in order."""
        pairs, term = [], ""
        for e in self._elements():
            if e.tag == "dt":
                term = e.text
            elif e.tag == "dd":
                pairs.append((term, e.text))
        return pairs


class Element(_View):
    """One element of the page.

    Attributes
    ----------
    tag : str
        Lower case, as :class:`~html.parser.HTMLParser` reports it (``clippath``, not ``clipPath``).
    attrs : dict of str to str
        Attribute values, character references decoded; ``""`` for a bare attribute.
    parent : Element or None
    children : list of Element
    """

    def __init__(
        self, page: Page, tag: str, attrs: dict[str, str], parent: Element | None, outline: tuple[Element, ...], in_svg: bool
    ):
        self._page, self.tag, self.attrs, self.parent = page, tag, attrs, parent
        self.children: list[Element] = []
        self._outline = outline  # the headings in force where it starts
        self._in_svg = in_svg
        self._index = self._last = len(page._all)
        self._chunk_start = self._chunk_end = len(page._chunk_list)

    def __repr__(self) -> str:
        return f"<{self.tag} {self.attrs}>"

    def _elements(self) -> Iterator[Element]:
        return iter(self._page._all[self._index + 1 : self._last + 1])

    def _chunks(self) -> Iterator[_Chunk]:
        return iter(self._page._chunk_list[self._chunk_start : self._chunk_end])

    def _keep_svg(self) -> bool:
        return self._in_svg

    @property
    def label(self) -> str | None:
        """The accessible name given by ``aria-label``, if any."""
        return self.attrs.get("aria-label")


class Section(_View):
    """What a heading introduces (see :meth:`_View.section`)."""

    def __init__(self, page: Page, heading: Element):
        self._page, self.heading = page, heading

    def _elements(self) -> Iterator[Element]:
        return (e for e in self._page._all if self.heading in e._outline)

    def _chunks(self) -> Iterator[_Chunk]:
        return (c for c in self._page._chunk_list if self.heading in c.outline)


class Table:
    """A table as its reader sees it: column headers and rows of cells.

    Attributes
    ----------
    element : Element
    headers : list of str
        The column headers (the last header row).
    rows : list of list of Cell
        The body rows, in document order; a row header (``<th scope="row">``) is a cell too.
    """

    def __init__(self, element: Element):
        self.element = element
        header_rows, self.rows = [], []
        for tr in element.find_all("tr"):
            if _nearest(tr, "table") is not element:
                continue  # a nested table's row
            cells = [c for c in tr.children if c.tag in ("td", "th")]
            if _nearest(tr, "thead") is not None or (not self.rows and all(c.tag == "th" for c in cells)):
                header_rows.append([c.text for c in cells])
            else:
                self.rows.append([_cell(c) for c in cells])
        self.headers: list[str] = header_rows[-1] if header_rows else []

    @property
    def caption(self) -> str | None:
        """The ``<caption>`` text, if any."""
        captions = [c for c in self.element.children if c.tag == "caption"]
        return captions[0].text if captions else None

    @property
    def records(self) -> list[dict[str, Cell]]:
        """The body rows as {column header: cell}; a ValueError where a row does not match the
        headers cell for cell (``colspan``, which no page here uses)."""
        return [dict(zip(self.headers, row, strict=True)) for row in self.rows]

    def column(self, header: str) -> list[Cell]:
        """The cells under one column header, top to bottom."""
        return [record[header] for record in self.records]

    @property
    def links(self) -> list[Link]:
        """The table's links, row by row."""
        return self.element.links


def _nearest(element: Element, tag: str) -> Element | None:
    parent = element.parent
    while parent is not None and parent.tag != tag:
        parent = parent.parent
    return parent


def _cell(element: Element) -> Cell:
    links = element.links
    return Cell(element.text, element.attrs.get("data-v"), links[0].href if links else None)


class Page(_View):
    """A parsed HTML document.

    Parameters
    ----------
    html : str
        The document; kept as :attr:`html` for the checks that are about its bytes.
    """

    def __init__(self, html: str):
        self.html = html
        self._page = self
        self._all: list[Element] = []
        self._chunk_list: list[_Chunk] = []
        _Builder(self).build(html)

    @property
    def title(self) -> str:
        """The document's ``<title>``."""
        titles = self.find_all("title")
        return _collapse("".join(c.text for c in titles[0]._chunks())) if titles else ""

    def _elements(self) -> Iterator[Element]:
        return iter(self._all)

    def _chunks(self) -> Iterator[_Chunk]:
        return iter(self._chunk_list)


class _Builder(HTMLParser):
    """Fills a :class:`Page`'s elements and text chunks, in document order."""

    def __init__(self, page: Page):
        super().__init__(convert_charrefs=True)
        self.page = page
        self.open: list[Element] = []
        self.levels: list[tuple[int, Element]] = []  # the headings in force, by level
        self.saved: list[list[tuple[int, Element]]] = []  # levels as each open sectioning element found them

    def build(self, html: str) -> None:
        self.feed(html)
        self.close()
        while self.open:
            self._end(self.open[-1])

    def _add_text(self, text: str) -> None:
        hidden = any(e.tag in _HIDDEN for e in self.open)
        in_svg = any(e.tag == "svg" for e in self.open)
        self.page._chunk_list.append(_Chunk(text, hidden, in_svg, self._outline()))

    def _outline(self) -> tuple[Element, ...]:
        return tuple(e for _, e in self.levels)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK:
            self._add_text(" ")
        if tag in _HEADINGS:  # a heading ends the sections of its level and below
            self.levels = [(n, e) for n, e in self.levels if n < _HEADINGS[tag]]
        in_svg = tag == "svg" or any(e.tag == "svg" for e in self.open)
        parent = self.open[-1] if self.open else None
        element = Element(self.page, tag, {k: v or "" for k, v in attrs}, parent, self._outline(), in_svg)
        self.page._all.append(element)
        if parent is not None:
            parent.children.append(element)
        self.open.append(element)
        if tag in _SECTIONING:
            self.saved.append(self.levels)
        if tag in _VOID:
            self._end(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self._end(self.open[-1])

    def handle_endtag(self, tag: str) -> None:
        for element in reversed(self.open):
            if element.tag == tag:
                while self.open[-1] is not element:
                    self._end(self.open[-1])
                self._end(element)
                return  # an end tag without a start tag is ignored, as browsers do

    def _end(self, element: Element) -> None:
        self.open.pop()
        element._last = len(self.page._all) - 1
        element._chunk_end = len(self.page._chunk_list)
        if element.tag in _BLOCK:
            self._add_text(" ")
        if element.tag in _HEADINGS:
            self.levels = self.levels + [(_HEADINGS[element.tag], element)]
        if element.tag in _SECTIONING:  # headings inside it end with it
            self.levels = self.saved.pop()

    def handle_data(self, data: str) -> None:
        self._add_text(data)


def parse(html: str) -> Page:
    """Parse a document; see :class:`Page`."""
    return Page(html)
