"""Charts drawn on the server as inline SVG: no script, no library, nothing fetched.

Each chart has its axes labelled with units, a legend, a tooltip (`<title>`) on every point
or bar, and an empty state. Colours and type come from classes styled by
`monitoring/static/monitoring/console.css`, so the markup carries no style attribute.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

WIDTH = 640
HEIGHT = 200
# Room for the y-axis labels on the left and the time labels below.
LEFT = 56
RIGHT = 30
TOP = 12
BOTTOM = 28
X_LABELS = 5
Y_TICKS = 4


@dataclass(frozen=True)
class Series:
    name: str
    # A class of console.css (`series-ok`, `series-failed`, `series-p50`, ...).
    css_class: str
    # One value per bucket; None where there is nothing to show (no finished execution).
    values: Sequence[float | None]


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5 or 5 times a power of ten at or above `value`, so the axis
    reads in round numbers."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 2.5, 5, 10) if step * power >= value)


def _number(value: float) -> str:
    if value >= 100 or value == int(value):
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.1f}"
    return f"{value:.2g}"


def _time_label(moment: datetime, bucket: timedelta) -> str:
    return moment.strftime("%H:%M" if bucket < timedelta(hours=1) else "%a %H:%M")


def _frame(
    *, title: str, unit: str, top: float, starts: Sequence[datetime], bucket: timedelta, body: str
) -> SafeString:
    """The chart's outline: title, y-axis ticks with the unit, time labels, then `body`."""
    plot_height = HEIGHT - TOP - BOTTOM
    ticks = format_html_join(
        "",
        '<line class="grid" x1="{left}" x2="{right}" y1="{y}" y2="{y}"></line>'
        '<text class="tick" x="{x}" y="{y}" dy="4" text-anchor="end">{label}</text>',
        (
            {
                "left": LEFT,
                "right": WIDTH - RIGHT,
                "x": LEFT - 6,
                "y": f"{TOP + plot_height * (1 - index / Y_TICKS):.1f}",
                "label": _number(top * index / Y_TICKS),
            }
            for index in range(Y_TICKS + 1)
        ),
    )
    step = max(len(starts) // (X_LABELS - 1), 1)
    labels = format_html_join(
        "",
        '<text class="tick" x="{}" y="{}" text-anchor="middle">{}</text>',
        (
            (_x(index, len(starts)), HEIGHT - 8, _time_label(starts[index], bucket))
            for index in range(0, len(starts), step)
        ),
    )
    return format_html(
        '<svg class="chart" viewBox="0 0 {} {}" role="img" aria-label="{}">'
        "<title>{}</title>{}{}"
        '<text class="unit" x="4" y="{}" transform="rotate(-90 4 {})" dy="8" '
        'text-anchor="middle">{}</text>{}</svg>',
        WIDTH,
        HEIGHT,
        title,
        title,
        ticks,
        labels,
        TOP + plot_height / 2,
        TOP + plot_height / 2,
        unit,
        body,
    )


def _join(parts: Sequence[SafeString]) -> SafeString:
    # Each part is already escaped markup: joined as it is.
    return format_html_join("", "{}", ((part,) for part in parts))


def _x(index: int, count: int) -> float:
    """The centre of bucket `index` of `count`."""
    slot = (WIDTH - LEFT - RIGHT) / max(count, 1)
    return round(LEFT + slot * (index + 0.5), 1)


def _y(value: float, top: float) -> float:
    return round(TOP + (HEIGHT - TOP - BOTTOM) * (1 - value / top), 1)


def _legend(series: Sequence[Series]) -> SafeString:
    return format_html(
        '<ul class="legend">{}</ul>',
        format_html_join(
            "",
            '<li><span class="swatch {}"></span>{}</li>',
            ((item.css_class, item.name) for item in series),
        ),
    )


def _empty(title: str, message: str) -> SafeString:
    return format_html(
        '<figure class="chart-box"><figcaption>{}</figcaption><p class="empty">{}</p></figure>',
        title,
        message,
    )


def _figure(title: str, svg: SafeString, series: Sequence[Series]) -> SafeString:
    return format_html(
        '<figure class="chart-box"><figcaption>{}</figcaption>{}{}</figure>',
        title,
        svg,
        _legend(series),
    )


def stacked_bars(
    *,
    title: str,
    unit: str,
    starts: Sequence[datetime],
    bucket: timedelta,
    series: Sequence[Series],
    empty: str,
) -> SafeString:
    """One bar per bucket, the series stacked (e.g. succeeded under failed)."""
    totals = [sum(item.values[index] or 0 for item in series) for index in range(len(starts))]
    if not any(totals):
        return _empty(title, empty)
    top = _nice_ceiling(max(totals))
    width = round(max((WIDTH - LEFT - RIGHT) / len(starts) - 1, 1), 1)
    bars = []
    for index, start in enumerate(starts):
        base = 0.0
        for item in series:
            value = item.values[index] or 0
            if not value:
                continue
            bars.append(
                format_html(
                    '<rect class="{}" x="{}" y="{}" width="{}" height="{}">'
                    "<title>{}: {} {} {}</title></rect>",
                    item.css_class,
                    round(_x(index, len(starts)) - width / 2, 1),
                    _y(base + value, top),
                    width,
                    round(_y(base, top) - _y(base + value, top), 1),
                    _time_label(start, bucket),
                    _number(value),
                    unit,
                    item.name.lower(),
                )
            )
            base += value
    svg = _frame(title=title, unit=unit, top=top, starts=starts, bucket=bucket, body=_join(bars))
    return _figure(title, svg, series)


def lines(
    *,
    title: str,
    unit: str,
    starts: Sequence[datetime],
    bucket: timedelta,
    series: Sequence[Series],
    empty: str,
    format_value: Callable[[float], str] = _number,
) -> SafeString:
    """One line per series; a bucket without a value breaks the line, and every point has a
    dot with its tooltip."""
    values = [value for item in series for value in item.values if value is not None]
    if not values:
        return _empty(title, empty)
    top = _nice_ceiling(max(values))
    body = []
    for item in series:
        segments: list[list[str]] = [[]]
        dots = []
        for index, value in enumerate(item.values):
            if value is None:
                segments.append([])
                continue
            x, y = _x(index, len(starts)), _y(value, top)
            segments[-1].append(f"{x},{y}")
            dots.append(
                format_html(
                    '<circle class="{}" cx="{}" cy="{}" r="2.5">'
                    "<title>{}: {} {} {}</title></circle>",
                    item.css_class,
                    x,
                    y,
                    _time_label(starts[index], bucket),
                    item.name,
                    format_value(value),
                    unit,
                )
            )
        body.extend(
            format_html(
                '<polyline class="line {}" points="{}"></polyline>',
                item.css_class,
                " ".join(points),
            )
            for points in segments
            if len(points) > 1
        )
        body.extend(dots)
    svg = _frame(title=title, unit=unit, top=top, starts=starts, bucket=bucket, body=_join(body))
    return _figure(title, svg, series)


def horizontal_bars(
    *, title: str, rows: Sequence[tuple[str, float, float]], empty: str
) -> SafeString:
    """A small chart of (label, succeeded, failed) per row: one stacked bar each."""
    if not rows:
        return _empty(title, empty)
    top = _nice_ceiling(max(ok + failed for _, ok, failed in rows))
    label_width, bar_height, gap = 140, 14, 6
    plot = WIDTH - label_width - 60
    height = len(rows) * (bar_height + gap) + gap
    body = []
    for index, (label, ok, failed) in enumerate(rows):
        y = gap + index * (bar_height + gap)
        ok_width, failed_width = round(plot * ok / top, 1), round(plot * failed / top, 1)
        body.append(
            format_html(
                '<text class="tick" x="{}" y="{}" dy="11" text-anchor="end">{}</text>'
                '<rect class="series-ok" x="{}" y="{}" width="{}" height="{}">'
                "<title>{}: {} succeeded</title></rect>"
                '<rect class="series-failed" x="{}" y="{}" width="{}" height="{}">'
                "<title>{}: {} failed</title></rect>"
                '<text class="tick" x="{}" y="{}" dy="11">{}</text>',
                label_width - 6,
                y,
                label,
                label_width,
                y,
                ok_width,
                bar_height,
                label,
                _number(ok),
                round(label_width + ok_width, 1),
                y,
                failed_width,
                bar_height,
                label,
                _number(failed),
                round(label_width + ok_width + failed_width + 4, 1),
                y,
                _number(ok + failed),
            )
        )
    svg = format_html(
        '<svg class="chart" viewBox="0 0 {} {}" role="img" aria-label="{}"><title>{}</title>{}'
        "</svg>",
        WIDTH,
        height,
        title,
        title,
        _join(body),
    )
    return _figure(
        title, svg, [Series("Succeeded", "series-ok", []), Series("Failed", "series-failed", [])]
    )
