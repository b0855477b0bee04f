"""Point labels that do not overlap: each label takes the first free spot around its point, in display pixels."""

from __future__ import annotations

# Offsets in points (x, y) tried in order, with the horizontal alignment each implies.
SPOTS = ((5, 4, "left"), (5, -10, "left"), (-5, 4, "right"), (-5, -10, "right"), (5, 12, "left"),
         (-5, 12, "right"), (5, -18, "left"), (-5, -18, "right"))
CHAR_WIDTH = 0.6  # of the font size, for a sans-serif label
LINE_HEIGHT = 1.2


def _box(x: float, y: float, dx: float, dy: float, align: str, width: float, height: float) -> tuple:
    left = x + dx if align == "left" else x + dx - width
    return left, y + dy, left + width, y + dy + height


def _overlaps(a: tuple, b: tuple) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(ax, points: list[tuple[float, float, str]], fontsize: float = 7.0, color: str = "#3b3f46") -> int:
    """Annotate every point with its text at a spot that overlaps no other label or marker; returns how many
    had to take the last spot anyway (crowded). Call after the axes' scales and limits are final."""
    fig = ax.figure
    scale = fig.dpi / 72.0  # points -> pixels
    frame = ax.bbox  # a label must stay inside the axes, or the figure edge cuts it
    taken: list[tuple] = []
    markers = [tuple(ax.transData.transform((x, y))) for x, y, _ in points]
    marks = [(mx - 3, my - 3, mx + 3, my + 3) for mx, my in markers]
    crowded = 0
    for (x, y, text), (px, py) in sorted(zip(points, markers, strict=True), key=lambda item: (item[1][0], item[1][1])):
        width, height = len(text) * fontsize * CHAR_WIDTH * scale, fontsize * LINE_HEIGHT * scale
        choice = None
        for dx, dy, align in SPOTS:
            box = _box(px, py, dx * scale, dy * scale, align, width, height)
            inside = frame.x0 <= box[0] and box[2] <= frame.x1 and frame.y0 <= box[1] and box[3] <= frame.y1
            if inside and not any(_overlaps(box, other) for other in taken + marks):
                choice = (dx, dy, align, box)
                break
        if choice is None:
            crowded += 1
            dx, dy, align = SPOTS[-1]
            choice = (dx, dy, align, _box(px, py, dx * scale, dy * scale, align, width, height))
        taken.append(choice[3])
        ax.annotate(text, (x, y), textcoords="offset points", xytext=choice[:2], ha=choice[2], fontsize=fontsize,
                    color=color)
    return crowded
