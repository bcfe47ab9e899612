"""SVG plotting primitives for the stage report: stacked panels, ticks, lines, bars, legends.

Hand-written instead of matplotlib (~0.65 s to import, ~1.3 s to draw the report): this draws
it in milliseconds with numpy alone. The output is deterministic (no ids, no timestamps,
coordinates rounded to 0.1 px) and self-contained. Long series are cut to the display
resolution first (`column_envelope`), so a file stays small whatever the data.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypedDict, Unpack

import numpy as np

FONT = "DejaVu Sans, Arial, sans-serif"
INK, FRAME, GRID = "#222", "#555", "#e2e2e2"
TICK, LABEL, TITLE, LEGEND = 11.5, 12.5, 15.0, 11.0  # font sizes, px
DASHES = {"-": "", "--": "6,3", ":": "1.5,2.5", "-.": "6,2.5,1.5,2.5"}
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# numpy unit: (its length in seconds, calendar steps), finest first
UNITS = {
    "m": (60, (1, 5, 15, 30)),
    "h": (3600, (1, 3, 6, 12)),
    "D": (86400, (1, 2, 7, 14)),
    "M": (2629746, (1, 2, 3, 6)),
    "Y": (31556952, (1, 2, 5, 10, 20, 50, 100, 1000)),
}
Values = Sequence[float] | np.ndarray
Box = tuple[float, float, float, float]  # x, y, width, height in px
Ticks = list[tuple[float, str]]


def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Evenly spaced ticks, a step of 1, 2 or 5 × 10^k, from at or below `lo` to at or above
    `hi`: target/2.5 to `target` steps, one more at each end at most."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    lo, hi = min(lo, hi), max(lo, hi)
    scale = max(abs(lo), abs(hi))
    if hi - lo <= scale * 1e-9:  # one value (to float precision): a range around it
        lo, hi = lo - (scale * 0.1 or 1.0), hi + (scale * 0.1 or 1.0)
    raw = (hi - lo) / max(target, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw * (1 - 1e-9))
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [i * step for i in range(first, last + 1)]


def tick_label(value: float, step: float) -> str:
    """Just the digits that tell ticks `step` apart."""
    value = 0.0 if abs(value) < step * 1e-6 else value  # not 1e-17 or "-0.0"
    digits = math.floor(math.log10(step) + 1e-9)
    if value and (abs(value) >= 1e7 or digits < -6):
        return f"{value:.{max(0, math.floor(math.log10(abs(value))) - digits)}e}"
    return f"{value:.{max(0, -digits)}f}" if digits >= -6 else "0"


def date_ticks(lo: float, hi: float, most: int = 8) -> Ticks:
    """At most `most` calendar-aligned ticks inside [lo, hi] (seconds since 1970, UTC), in the
    unit the span needs (minutes, hours, days, months or years), labelled in it."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or not 0 < hi - lo < 1e11:
        return []
    for unit, (seconds, steps) in UNITS.items():
        for step in (s for s in steps if (hi - lo) / (seconds * s) <= most):
            first, last = (
                np.datetime64(math.floor(v), "s").astype(f"M8[{unit}]") for v in (lo, hi)
            )
            t = np.arange(first, last + 1)
            if unit == "D":  # the day of the month, from 0; no 29th followed by a 1st
                n = (t - t.astype("datetime64[M]")).astype(np.int64)
                n[n > 28 - step] = 0 if step == 1 else -1
            else:  # the minute of the hour, hour of the day, month of the year, or year
                n = t.astype(np.int64) % {"m": 60, "h": 24, "M": 12}.get(unit, 1 << 62)
                n += 1970 if unit == "Y" else 0
            s = t[n % step == 0].astype("datetime64[s]").astype(np.int64)
            s = s[(s >= lo) & (s <= hi)]
            if len(s) <= most:
                return [(float(v), _date_label(int(v), unit)) for v in s]
    return []


def _date_label(seconds: int, unit: str) -> str:
    text = str(np.datetime64(seconds, "s"))  # 2023-07-14T06:15:00
    day = f"{MONTHS[int(text[5:7]) - 1]} {int(text[8:10])}"
    labels = {"Y": text[:4], "M": f"{day[:3]} {text[:4]}", "D": day, "h": f"{day} {text[11:16]}"}
    return labels.get(unit, text[11:16])


def column_envelope(px: np.ndarray, py: np.ndarray, width: float = 1.0) -> np.ndarray:
    """Indices (increasing) of the points worth drawing: of each run of consecutive points in
    one pixel column, the first, lowest, highest and last. The polyline through them covers
    the same pixels at display size; with x increasing that is at most 4 per column."""
    if len(px) <= 4:
        return np.arange(len(px))
    column = np.floor(np.asarray(px, np.float64) / width)
    new = np.concatenate(([True], column[1:] != column[:-1]))
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], len(px)) - 1
    order = np.lexsort((py, np.cumsum(new)))  # by run, then by y: a run keeps its positions
    return np.unique(np.concatenate((starts, ends, order[starts], order[ends])))


def _along(px: np.ndarray, py: np.ndarray, gap: float = 6.0) -> np.ndarray:
    """Points every `gap` px along a polyline: what a legend placed there would hide."""
    if len(px) < 2:
        return np.column_stack((px, py))
    dx, dy = np.diff(px), np.diff(py)
    k = np.maximum(1, np.ceil(np.hypot(dx, dy) / gap)).astype(np.int64)
    seg = np.repeat(np.arange(len(k)), k)
    t = (np.arange(k.sum()) - np.repeat(np.cumsum(k) - k, k)) / k[seg]
    return np.column_stack((px[seg] + t * dx[seg], py[seg] + t * dy[seg]))


def _fmt(values: np.ndarray | float) -> list[str]:
    rounded = np.round(np.asarray(values, np.float64).reshape(-1), 1) + 0.0  # never "-0"
    return [f"{v:g}" for v in rounded.tolist()]


def _tag(name: str, text: str | None = None, /, **attrs: str | float) -> str:
    """<name a-b="1.5" .../>, or with text inside: numbers to 0.1, strings escaped."""
    body = "".join(
        f' {k.replace("_", "-")}="{html.escape(v) if isinstance(v, str) else _fmt(v)[0]}"'
        for k, v in attrs.items()
    )
    return f"<{name}{body}/>" if text is None else f"<{name}{body}>{html.escape(text)}</{name}>"


def _text(x: float, y: float, s: str, size: float, anchor: str = "middle", **extra: str) -> str:
    return _tag("text", s, x=x, y=y, font_size=size, text_anchor=anchor, **extra)


def _widest(ticks: Ticks, size: float = TICK) -> float:
    return max((len(s) * size * 0.6 for _, s in ticks), default=0.0)  # DejaVu Sans is wide


class Style(TypedDict, total=False):
    width: float  # of the stroke, px
    dash: str  # a key of DASHES
    alpha: float  # opacity of a bar's fill
    label: str | None  # in the legend; None: not there
    marker: bool  # a dot on every point of a line


@dataclass
class _Item:
    kind: str  # line, bars (x: left and right edges), barh (y: category), hline, vline
    x: np.ndarray
    y: np.ndarray
    colour: str
    width: float = 1.5
    dash: str = "-"
    alpha: float = 1.0
    label: str | None = None
    marker: bool = False

    def stroke(self) -> dict[str, str | float]:
        out: dict[str, str | float] = {"fill": "none", "stroke": self.colour}
        out["stroke_width"] = self.width
        return out | ({"stroke_dasharray": DASHES[self.dash]} if DASHES.get(self.dash) else {})


def _finite(*values: Values) -> list[np.ndarray]:
    arrays = [np.asarray(v, np.float64).reshape(-1) for v in values]
    ok = np.logical_and.reduce([np.isfinite(a) for a in arrays])
    return [a[ok] for a in arrays]


@dataclass
class Axes:
    """One panel. A date axis (`xdate`) takes x in seconds since 1970, UTC."""

    title: str = ""
    xlabel: str = ""
    ylabel: str = ""
    xdate: bool = False
    grid: str = "xy"
    legend: str = "best"  # or a corner: "upper left", "lower right" ...
    note: str = "no data"  # written in the middle when there is nothing to draw
    items: list[_Item] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)

    def line(
        self, x: Values, y: Values, colour: str, step: bool = False, **style: Unpack[Style]
    ) -> None:
        """A polyline through the finite points; `step`: y holds until the next x ("post")."""
        x, y = _finite(x, y)
        if step and len(x) > 1:
            x, y = np.repeat(x, 2)[1:], np.repeat(y, 2)[:-1]
        self.items.append(_Item("line", x, y, colour, **style))

    def bars(self, edges: Values, heights: Values, colour: str, **style: Unpack[Style]) -> None:
        """Bars up from 0, bar i from edges[i] to edges[i + 1] (a histogram)."""
        e = np.asarray(edges, np.float64)
        left, right, h = _finite(e[:-1], e[1:], heights) if len(e) > 1 else _finite([], [], [])
        self.items.append(_Item("bars", np.stack((left, right)), h, colour, **style))

    def barh(self, labels: Sequence[str], values: Values, colour: str) -> None:
        """Horizontal bars from 0, one per category, the first on top."""
        self.categories = list(labels)
        v, at = _finite(values, np.arange(len(labels)))
        self.items.append(_Item("barh", v, at, colour))

    def hline(self, y: float, colour: str, **style: Unpack[Style]) -> None:
        self.items.append(_Item("hline", np.zeros(0), _finite([y])[0], colour, **style))

    def vline(self, x: float, colour: str, **style: Unpack[Style]) -> None:
        self.items.append(_Item("vline", _finite([x])[0], np.zeros(0), colour, **style))

    def empty(self) -> bool:
        """Nothing to see: no point of a line, no bar longer than 0."""
        return not any(
            i.y.size if i.kind == "line" else np.count_nonzero(i.x if i.kind == "barh" else i.y)
            for i in self.items
            if i.kind in ("line", "bars", "barh")
        )

    def view(self, axis: str) -> tuple[float, float]:
        """The data's range with 5% to spare, but none beyond a bar's base (0)."""
        values, base = [np.zeros(0)], False
        for i in self.items:
            if (i.kind, axis) in (("bars", "y"), ("barh", "x")) and i.y.size:
                values, base = [*values, np.zeros(1)], True
            if (i.kind, axis) != ("barh", "y"):
                values.append((i.x if axis == "x" else i.y).reshape(-1))
        every, date = np.concatenate(values), axis == "x" and self.xdate
        if not every.size:
            return (0.0, 86400.0) if date else (0.0, 1.0)
        lo, hi = float(every.min()), float(every.max())
        if hi - lo <= max(abs(lo), abs(hi)) * 1e-9:  # one value: a range around it
            pad = 43200.0 if date else abs(lo) * 0.1 or 1.0
            return lo - pad, hi + pad
        pad = (hi - lo) * 0.05
        return lo - (0 if base and lo == 0 else pad), hi + (0 if base and hi == 0 else pad)


class Figure:
    """Panels stacked top to bottom in equal bands; `sharex`: one x range, labelled once."""

    def __init__(self, width: int, height: int, panels: int = 1, sharex: bool = False) -> None:
        self.width, self.height, self.sharex = width, height, sharex
        self.axes = [Axes() for _ in range(panels)]

    def svg(self) -> bytes:
        band = self.height / len(self.axes)
        xs = [a.view("x") for a in self.axes]
        if self.sharex:
            xs = [(min(x[0] for x in xs), max(x[1] for x in xs))] * len(xs)
        ys = [(-0.6, len(a.categories) - 0.4) if a.categories else a.view("y") for a in self.axes]
        yticks = [
            [(float(k), c) for k, c in enumerate(a.categories)] or _numeric(y, int(band / 50))
            for a, y in zip(self.axes, ys, strict=True)
        ]
        # One left edge for every panel, so that a shared x axis lines up.
        left = 14 + max(
            (24 if a.ylabel else 0) + _widest(t) for a, t in zip(self.axes, yticks, strict=True)
        )
        out = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" height="{self.height}"'
            f' viewBox="0 0 {self.width} {self.height}" font-family="{FONT}" fill="{INK}">',
            _tag("rect", width=self.width, height=self.height, fill="#fff"),
        ]
        for n, a in enumerate(self.axes):
            labelled = not self.sharex or n == len(self.axes) - 1
            top = n * band + (32 if a.title else 10)
            bottom = (n + 1) * band - ((26 + (18 if a.xlabel else 0)) if labelled else 10)
            box = (left, top, self.width - 18 - left, bottom - top)
            out += _panel(a, box, xs[n], ys[n], yticks[n], labelled)
        return "\n".join([*out, "</svg>"]).encode()


def _numeric(view: tuple[float, float], target: int) -> Ticks:
    ticks = nice_ticks(*view, max(4, min(9, target)))
    step = ticks[1] - ticks[0]
    inside = [t for t in ticks if view[0] - step * 1e-6 <= t <= view[1] + step * 1e-6]
    return [(t, tick_label(t, step)) for t in inside]


def _panel(
    a: Axes,
    box: Box,
    xv: tuple[float, float],
    yv: tuple[float, float],
    yticks: Ticks,
    labelled: bool,
) -> list[str]:
    x0, y0, w, h = box
    down = -1 if a.categories else 1  # categories run down from the first

    def px(v: object) -> np.ndarray:
        return x0 + (np.asarray(v, np.float64) - xv[0]) * (w / (xv[1] - xv[0]))

    def py(v: object) -> np.ndarray:
        return y0 + h / 2 - down * (np.asarray(v, np.float64) - sum(yv) / 2) * h / (yv[1] - yv[0])

    xticks = date_ticks(*xv) if a.xdate else _numeric(xv, int(w / 70))
    xs, ys = _fmt(px([t for t, _ in xticks])), _fmt(py([t for t, _ in yticks]))
    grid = [f"M{x} {y0:.1f}v{h:.1f}" for x in xs] if "x" in a.grid else []
    grid += [f"M{x0:.1f} {y}h{w:.1f}" for y in ys] if "y" in a.grid and not a.categories else []
    out = [_tag("path", d="".join(grid), stroke=GRID)] if grid else []
    ink = [np.zeros((0, 2))]  # points a legend would hide
    for i in a.items:
        if i.kind in ("line", "hline", "vline") and (i.x.size or i.y.size):
            X = {"line": px(i.x), "hline": np.array([x0, x0 + w])}.get(i.kind, px(i.x).repeat(2))
            Y = {"line": py(i.y), "vline": np.array([y0, y0 + h])}.get(i.kind, py(i.y).repeat(2))
            keep = column_envelope(X, Y)
            X, Y = X[keep], Y[keep]
            xy = list(zip(_fmt(X), _fmt(Y), strict=True))
            points = " ".join(f"{u},{v}" for u, v in xy)
            out.append(_tag("polyline", points=points, stroke_linejoin="round", **i.stroke()))
            out += [
                f'<circle cx="{u}" cy="{v}" r="3.5" fill="{i.colour}"/>' for u, v in xy if i.marker
            ]
            ink.append(_along(X, Y))
        elif i.kind in ("bars", "barh") and i.y.size:
            zero = np.zeros(i.y.size)
            rect = (  # x from, x to, y from, y to of each bar
                (px(i.x[0]), px(i.x[1]), py(zero), py(i.y))
                if i.kind == "bars"
                else (px(zero), px(i.x), py(i.y - 0.4), py(i.y + 0.4))
            )
            d = "".join(
                f"M{x} {y}H{u}V{v}H{x}Z" for x, u, y, v in zip(*map(_fmt, rect), strict=True)
            )
            out.append(_tag("path", d=d, fill=i.colour, fill_opacity=i.alpha))
            middle = np.repeat((rect[0] + rect[1]) / 2, 2)  # up each bar, on to the next
            ink.append(_along(middle, np.column_stack(rect[2:]).reshape(-1)))
    marks = [f"M{x} {y0 + h:.1f}v4" for x in xs] + [f"M{x0:.1f} {y}h-4" for y in ys]
    out.append(_tag("path", d="".join(marks), stroke=FRAME) if marks else "")
    out.append(_tag("rect", x=x0, y=y0, width=w, height=h, fill="none", stroke=FRAME))
    for at, (_, s) in zip(xs if labelled else [], xticks, strict=False):
        out.append(_text(float(at), y0 + h + 18, s, TICK))
    for at, (_, s) in zip(ys, yticks, strict=True):
        out.append(_text(x0 - 7, float(at) + 4, s, TICK, "end"))
    lx, mid = x0 - 16 - _widest(yticks), y0 + h / 2
    for shown, x, y, text, size, extra in (
        (a.title, x0 + w / 2, y0 - 11, a.title, TITLE, {}),
        (a.xlabel and labelled, x0 + w / 2, y0 + h + 38, a.xlabel, LABEL, {}),
        (a.ylabel, lx, mid, a.ylabel, LABEL, {"transform": f"rotate(-90 {lx:.1f} {mid:.1f})"}),
        (a.empty(), x0 + w / 2, mid, a.note, LABEL, {"fill": "#777"}),
    ):
        out += [_text(x, y, text, size, **extra)] if shown else []
    entries = [i for i in a.items if i.label]
    return out + (_legend(entries, box, a.legend, np.concatenate(ink)) if entries else [])


def _legend(entries: list[_Item], box: Box, loc: str, ink: np.ndarray) -> list[str]:
    """A legend in the corner `loc`, or ("best") in the corner that hides the least ink."""
    x0, y0, w, h = box
    lw, lh = 40 + _widest([(0, i.label or "") for i in entries], LEGEND), 8 + 16 * len(entries)
    right, low = x0 + w - lw - 8, y0 + h - lh - 8
    corners = {
        "upper right": (right, y0 + 8),
        "upper left": (x0 + 8, y0 + 8),
        "lower left": (x0 + 8, low),
        "lower right": (right, low),
    }

    def hidden(corner: tuple[float, float]) -> int:
        dx, dy = ink[:, 0] - corner[0], ink[:, 1] - corner[1]
        return int(((dx >= 0) & (dx <= lw) & (dy >= 0) & (dy <= lh)).sum())

    lx, ly = corners[loc] if loc in corners else min(corners.values(), key=hidden)
    frame: dict[str, str | float] = {"rx": 3, "fill": "#fff", "fill_opacity": 0.9, "stroke": "#ccc"}
    out = [_tag("rect", x=lx, y=ly, width=lw, height=lh, **frame)]
    for k, i in enumerate(entries):
        y = ly + 12 + 16 * k
        if i.kind in ("bars", "barh"):
            fill: dict[str, str | float] = {"fill": i.colour, "fill_opacity": i.alpha}
            out.append(_tag("rect", x=lx + 8, y=y - 5, width=24, height=10, **fill))
        else:
            out.append(_tag("path", d=f"M{lx + 7:.1f} {y:.1f}h26", **i.stroke()))
            out += [_tag("circle", cx=lx + 20, cy=y, r=3.5, fill=i.colour)] if i.marker else []
        out.append(_text(lx + 38, y + 4, i.label or "", LEGEND, "start"))
    return out
