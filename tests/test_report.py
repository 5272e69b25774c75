"""The generic HTML report builder: self-contained output, escaping, atomic writes, bad input."""

from __future__ import annotations

import base64
import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from spatialclust.report import GalleryItem, Report, image_data_uri


def _decoded_pngs(text: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)]


def test_report_is_self_contained(tmp_path):
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    png = tmp_path / "fig.png"
    fig.savefig(png)
    report = Report("Run <1>", subtitle="input: a&b.imzML")
    report.add_params({"embedding": [{"method": "regular", "params": {"k": np.int64(3)}}]})
    report.add_table("Metrics", pd.DataFrame({"clustering": ["kmeans"], "RIR": [12.345], "noise": [np.nan]}))
    report.add_figure("From file", png, caption="a file")
    report.add_figure("From figure", fig)
    report.add_gallery("Members", [GalleryItem(np.arange(16.0).reshape(4, 4), label="m/z 1")], collapsed=True)
    plt.close(fig)
    out = report.write(tmp_path / "sub" / "report.html")

    text = out.read_text()
    assert text.startswith("<!DOCTYPE html>")
    # no external assets: every src is an embedded data URI
    assert all(src.startswith("data:") for src in re.findall(r'src="([^"]+)"', text))
    pngs = _decoded_pngs(text)
    assert len(pngs) == 3 and all(p.startswith(b"\x89PNG") for p in pngs)
    # user text is escaped, numbers formatted, missing values shown as "/"
    assert "Run &lt;1&gt;" in text and "a&amp;b.imzML" in text
    assert "12.3" in text and "<td class=\"\">/</td>" in text
    assert "k: 3" in text  # numpy scalars converted for YAML
    assert "<details><summary>Members</summary>" in text
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]  # no temporary left behind


def test_image_data_uri_rejects_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        image_data_uri(tmp_path / "missing.png")
    with pytest.raises(ValueError, match=r"shape \(2, 2, 2\)"):
        image_data_uri(np.zeros((2, 2, 2)))
    with pytest.raises(TypeError, match="GalleryItem"):
        Report("x").add_gallery("g", [np.zeros((2, 2))])
    with pytest.raises(TypeError, match="DataFrame"):
        Report("x").add_table("t", [1, 2])


def test_failed_write_leaves_previous_report(tmp_path, monkeypatch):
    path = Report("first").write(tmp_path / "report.html")
    original = type(path).write_text

    def half_write(self, text, *args, **kwargs):
        original(self, text[:10], *args, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(type(path), "write_text", half_write)
    with pytest.raises(OSError, match="disk full"):
        Report("second").write(path)
    monkeypatch.undo()
    assert "first" in path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_headline_names_the_most_trustworthy_clustering():
    """The headline chooses by NMI, else label-free evidence (ties broken by the next), never by RIR."""
    import pandas as pd

    from spatialclust.report._cluster import _overview

    def clustering(nmi, recall, iso, rir, embedding="X_regular"):
        metrics = {"n_meaningful_clusters": 3, "partner_recall@10": recall, "isotopic_recall": iso, "rir": rir}
        if nmi is not None:
            metrics["nmi"] = nmi
        return {"metrics": metrics, "embedding": embedding}

    comparison = pd.DataFrame({"key": ["a", "b", "c"], "clustering": ["k-means", "UMAP-DBSCAN", "k-means"],
                               "images": ["regular", "regular", "neural"], "RIR": [30.0, 5.0, 2.0]})
    summary = {"dataset": "d", "n_images": 9, "n_pixels": 16, "clusterings": {
        "a": clustering(0.5, 0.9, 0.5, 30.0), "b": clustering(0.8, 0.9, 0.7, 5.0),
        "c": clustering(0.6, 0.7, 0.9, 2.0, "X_neural")}}
    text = _overview(summary, comparison)
    assert "Most trustworthy: UMAP-DBSCAN on regular ion images" in text and "NMI" in text
    # the representation, by the partner recall of each embedding (one value per embedding)
    assert "Representation to trust: regular ion images" in text and "(partner recall@10 0.90 against 0.70 for neural)" in text
    assert "RIR is not used to choose" in text
    for info in summary["clusterings"].values():
        del info["metrics"]["nmi"]
    text = _overview(summary, comparison)  # no labels: partner recall ties a/b, isotopic recall decides
    assert "Most trustworthy: UMAP-DBSCAN on regular ion images" in text and "partner recall" in text
