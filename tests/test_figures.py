"""Figures that read: no title or caption clipped at the figure's edge, none hidden behind another or behind an
image (`plotting.layout_problems`, which draws the figure and compares the rendered boxes), for the dataset tour,
notebook 00's and 05's grids and the training curves; step counts are integers."""

import jupytext
import matplotlib
import pytest
import torch
from matplotlib.figure import Figure

import ldm_lite as ll
from ldm_lite.plotting import layout_problems

matplotlib.use("Agg")
NOTEBOOKS = ll.paths.REPO_ROOT / "notebooks"


def test_layout_problems_finds_a_clipped_title_and_a_hidden_caption():
    narrow = Figure(figsize=(3.2, 2.8))  # the old curves.png: 352 px wide, its title started at x = -36
    narrow.subplots().plot([0, 1])
    narrow.suptitle("LDM training loss ||eps - eps_theta||^2 (eq. 2)")
    assert any("figure title reaches outside" in p for p in layout_problems(narrow))

    crowded = Figure(figsize=(3.2, 3.2))  # two rows of images whose 3-line captions reach into the row above
    axes = crowded.subplots(2, 2, gridspec_kw=dict(hspace=0.0))
    for ax in axes.flat:
        ax.imshow(torch.zeros(8, 8).numpy())
        ax.set_title("a small red circle\nleft of a large\nblue square", fontsize=8)
    assert any("overlaps the image of the axes" in p for p in layout_problems(crowded))

    roomy = Figure(figsize=(6, 3), layout="constrained")
    roomy.subplots().plot([0, 1])
    roomy.suptitle("a title that fits")
    assert layout_problems(roomy) == []


def test_every_tour_figure_reads(tmp_path, monkeypatch):
    figures = {}
    grid = ll.plotting.dataset_grid

    def recorded(ds, *args, **kwargs):
        figures[kwargs.get("title")] = fig = grid(ds, *args, **kwargs)
        return fig

    monkeypatch.setattr(ll.plotting, "dataset_grid", recorded)
    written = ll.pipeline.tour(tmp_path)
    assert set(written) == {"shapes", "shapes_bg_noise", "mnist"} and len(figures) == 3
    for title, fig in figures.items():
        assert layout_problems(fig) == [], title
        assert fig.get_size_inches()[0] * 110 >= 1200, title  # saved at dpi 110: 8 images a row, each >= 150 px


def test_notebook_05_grids_read():
    """The layout grid (two-shape captions over four columns), the guidance grid and the MNIST digit grid, with the
    captions the notebook gives them, at smoke and at full size."""
    ds = ll.datasets.shapes(32, n=8, seed=3, max_shapes=2)
    items = [ds[i] for i in range(8)]
    layout = ll.plotting.image_grid(torch.stack([it["image"] for it in items]), [it["caption"] for it in items],
                                    ncols=4, title="shapes and their layout boxes (x0, y0, x1, y1)")
    assert layout_problems(layout) == []
    blank = torch.zeros(40, 3, 32, 32)
    for n_images, scales in ((4, (0.0, 1.0, 3.0, 6.0)), (8, (0.0, 1.0, 3.0, 6.0))):
        titles = [f"s={s:g}" for s in scales for _ in range(n_images)] + ["s=3, neg."] * n_images
        fig = ll.plotting.image_grid(blank[:len(titles)], titles, ncols=n_images,
                                     title=f"{'a large yellow star'!r}: guidance scale (rows) and a negative prompt (last row)")
        assert layout_problems(fig) == [], n_images
    for scales in ((1.0, 3.0), (0.0, 1.0, 3.0, 5.0)):
        fig = ll.plotting.image_grid(blank[:10 * len(scales)], [f"{d} (s={s:g})" for s in scales for d in range(10)],
                                     ncols=10, title="class-conditional MNIST: digit (columns) x guidance scale (rows)")
        assert layout_problems(fig) == [], scales
        kinds = ll.datasets.KINDS  # the class-conditional shapes grid: kind (columns) x scale (rows)
        fig = ll.plotting.image_grid(blank[:len(kinds) * len(scales)], [f"{k} (s={s:g})" for s in scales for k in kinds],
                                     ncols=len(kinds), title="class-conditional shapes: kind (columns) x guidance scale (rows)")
        assert layout_problems(fig) == [], scales


def _notebook_cell(name: str, marker: str) -> str:
    nb = jupytext.read(NOTEBOOKS / name)
    (cell,) = [c.source for c in nb.cells if c.cell_type == "code" and marker in c.source]
    return cell


@pytest.mark.parametrize("n_show", [8, 16])
def test_notebook_00s_three_shapes_grid_shows_three_shapes_and_says_how_many_had_room(n_show, capsys):
    ns = {"ll": ll, "RESOLUTION": 32, "N_SHOW": n_show}
    exec(_notebook_cell("00_tour.py", "min_shapes=3"), ns)
    shown = ns["three"][:n_show]
    assert len(shown) == n_show and all(int((it["attrs"][:, 0] >= 0).sum()) == 3 for it in shown)
    assert all(it["caption"].count(" a ") + it["caption"].startswith("a ") == 3 for it in shown)  # said, too
    assert f"{len(ns['three'])} of 100 layouts had room for all three" in capsys.readouterr().out
    assert len([ax for ax in ns["fig"].axes if ax.images]) == n_show and layout_problems(ns["fig"]) == []


def test_training_steps_are_counted_in_integers():
    history = ll.fit.History({})
    for s in range(6):
        history.log(step=s, loss=1.0 / (s + 1))
    assert all(type(s) is int for s in history.data["step"])
    assert f"trained {history.data['step'][-1] + 1} steps" == "trained 6 steps"  # notebook 03 printed "1190.0 steps"
    fig = ll.plotting.curves(history.data, keys=["loss"])
    fig.canvas.draw()
    ticks = [t.get_text().replace("\u2212", "-") for t in fig.axes[0].get_xticklabels()]
    assert ticks and all(t.lstrip("-").isdigit() for t in ticks if t), ticks
    assert layout_problems(fig) == []
