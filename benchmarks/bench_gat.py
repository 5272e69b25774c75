"""Benchmark the graph attention autoencoder of DARLC's augmentation (seed 003, eqs. 1-5).

Times full-batch training epochs (forward, backward, Adam step) of
:func:`spatialclust.models._gat.gat_smooth`'s autoencoder on one dataset, for

- ``package``: the package's implementation (attention scores per node, then gathered per edge;
  ``A (h W)`` evaluated as ``(A h) W`` when that passes fewer columns along the edges);
- ``per-edge`` (baseline, same run): the textbook implementation, which gathers the transformed
  neighbour vectors ``h W`` (512 wide in the paper's C-512-30 network) along every edge, for the
  scores and for the messages.

Both start from the same weights; the reconstructions after the timed epochs are compared to
show that they compute the same thing.

The bladder data come from ``sc.datasets.mouse_bladder``: its cache, downloaded when absent, or the
folder given with ``--data-path``; when they cannot be downloaded the benchmark says so and stops.

Example (the figures in docs/benchmarks.md)::

    python benchmarks/bench_gat.py --dataset bladder --epochs 3 --json gat.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import spatialclust as sc
from spatialclust.models._gat import _build_module, pixel_graph
from spatialclust.tl._darlc import scale_images
from _public_data import bladder_grid


def per_edge_attention(h, w, a_s, a_r, edges):
    src, dst = edges
    hw = h @ w
    e = torch.exp(torch.sigmoid(hw[dst] @ a_s + hw[src] @ a_r) - 1.0)
    denom = torch.zeros(h.shape[0], dtype=h.dtype).index_add_(0, dst, e)
    return e / denom[dst]


def per_edge_layer(self, h, w, att, edges):
    return self._propagate(h @ w, att, edges)


def load(name: str, data_path: Path | None):
    """Scaled feature images and tissue mask of the dataset, or None when the bladder data are not available."""
    if name == "bladder":
        adata = bladder_grid(data_path)
        if adata is None:
            return None
        sc.pp.preprocess_ion_images(adata, normalize="tic")
    else:
        adata = sc.datasets.simulate_st(shape=(64, 64), n_patterns=5, genes_per_pattern=30, seed=0)
        sc.pp.preprocess_st(adata, min_spots=10)
    mask = sc.pp.tissue_mask_image(adata)
    return scale_images(sc.pp.feature_images(adata), mask), mask


def train(images, mask, *, implementation: str, epochs: int, seed: int):
    torch.manual_seed(seed)
    edges = torch.as_tensor(pixel_graph(mask))
    x = torch.as_tensor(images[:, mask].T.copy())
    model = _build_module(images.shape[0], (512, 30))
    if implementation == "per-edge":  # the class is built per call: patching it touches this model only
        type(model)._attention = staticmethod(per_edge_attention)
        type(model)._layer = per_edge_layer
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    start = time.perf_counter()
    for _ in range(epochs):
        optimizer.zero_grad()
        _, recon = model(x, edges)
        ((x - recon) ** 2).sum(dim=1).mean().backward()
        optimizer.step()
    seconds = (time.perf_counter() - start) / epochs
    with torch.inference_mode():
        _, recon = model(x, edges)
    return seconds, recon.numpy(), int(edges.shape[1]), int(x.shape[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=["bladder", "simulated"], default="bladder")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-path", type=Path, default=None, metavar="PATH",
                        help="folder holding the bladder's converted bladder_cube.npz (default: the sc.datasets cache, "
                             "$SPATIALCLUST_DATA, downloading it when missing)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load(args.dataset, args.data_path)
    if loaded is None:
        return
    images, mask = loaded
    out = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    recon = {}
    for implementation in ("package", "per-edge"):
        seconds, recon[implementation], n_edges, n_nodes = train(images, mask, implementation=implementation,
                                                                 epochs=args.epochs, seed=args.seed)
        out[implementation] = {"seconds_per_epoch": seconds}
        print(f"{implementation:8s} {seconds:.2f} s/epoch ({n_nodes} pixels, {n_edges} edges, {images.shape[0]} channels)",
              flush=True)
    out["speedup"] = out["per-edge"]["seconds_per_epoch"] / out["package"]["seconds_per_epoch"]
    out["max_abs_difference"] = float(np.abs(recon["package"] - recon["per-edge"]).max())
    print(f"speed-up {out['speedup']:.1f}x, max |difference| of the reconstructions {out['max_abs_difference']:.2g}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
