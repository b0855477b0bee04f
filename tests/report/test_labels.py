"""Point labels take free spots: no two label boxes overlap when there is room."""

from __future__ import annotations

from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure

from doctor.report.labels import CHAR_WIDTH, LINE_HEIGHT, place_labels


def test_labels_of_close_points_do_not_overlap() -> None:
    fig = Figure(figsize=(6.4, 4.0))
    FigureCanvasSVG(fig)
    ax = fig.add_subplot()
    points = [(1.0, 1.0 + 0.02 * i, f"checkup-{i}") for i in range(4)] + [(5.0, 3.0, "alone"), (5.95, 2.0, "at-the-right-edge")]
    ax.scatter([x for x, _, _ in points], [y for _, y, _ in points])
    ax.set(xlim=(0, 6), ylim=(0, 4))
    assert place_labels(ax, points) == 0
    fig.canvas.draw()
    boxes = [t.get_window_extent() for t in ax.texts]
    assert len(boxes) == len(points)
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), (a, b)
    frame = ax.get_window_extent()
    assert all(frame.x0 <= b.x0 and b.x1 <= frame.x1 for b in boxes)  # the point at the right edge labels leftwards
    assert CHAR_WIDTH > 0 and LINE_HEIGHT > 1
