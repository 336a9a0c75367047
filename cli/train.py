"""``landcover train | evaluate | active-learn``: typer commands the main CLI mounts with
:func:`register`, handing in the loaders of the sources models/ cannot load alone (the
``demo-world`` loader lives in pipeline/, which models/ never imports).

Errors a user can fix are ``LandcoverError`` subclasses; the main CLI prints them as one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated

import numpy as np
import typer
from rich.console import Console

if TYPE_CHECKING:
    from models.training.sources import SourceLoader
    from models.training.timm import WindowLoader

console = Console(stderr=True)


@dataclass(frozen=True)
class TrainingCommands:
    """``train``, ``evaluate`` and ``active-learn``, bound to the loaders of the sources models/
    cannot load alone (e.g. ``{"demo-world": loader}``); :func:`register` mounts the methods."""

    sources: Mapping[str, SourceLoader] = field(default_factory=dict)
    window_sources: Mapping[str, WindowLoader] = field(default_factory=dict)

    def train(
        self,
        config: Annotated[Path, typer.Argument(help="training config (YAML), e.g. models/configs/demo.yaml")],
        fresh: Annotated[bool, typer.Option("--fresh", help="ignore a checkpoint of an earlier run and start over")] = False,
        evaluate: Annotated[bool, typer.Option("--evaluate/--no-evaluate", help="evaluate on the validation source afterwards")] = True,
        quiet: Annotated[bool, typer.Option("--quiet", help="no progress bars")] = False,
    ) -> None:
        """Train the SR and classifier stages as the config says (resumes an interrupted run), or, for a
        config with ``family: timm``, a timm network on multi-band windows (models/configs/demo-multiband.yaml)."""
        from models.training.config import load_config
        from models.training.sources import load_source
        from models.training.sr_classifier import run_training
        from models.training.timm import is_timm_config, load_timm_config, run_timm_training

        if is_timm_config(config):
            timm_result = run_timm_training(load_timm_config(config), window_sources=self.window_sources,
                                            progress=not quiet)
            m = timm_result.card.metrics
            console.print(f"weights: {timm_result.weights} ({timm_result.seconds:.0f} s); validation n={m['validation_n']} "
                          f"macro mAP {m['validation_macro_map']:.3f} micro mAP {m['validation_micro_map']:.3f} "
                          f"macro F1 {m['validation_macro_f1']:.3f}")
            return
        cfg = load_config(config)
        result = run_training(cfg, resume=not fresh, progress=not quiet, sources=self.sources)
        console.print(f"weights: {result.weights} ({result.seconds:.0f} s of training)")
        if evaluate:
            from models.evaluate import evaluate_weights

            metrics = evaluate_weights(result.weights, load_source(cfg.validation, keep_windows=True, sources=self.sources))
            _report(metrics)

    def evaluate(
        self,
        weights: Annotated[Path, typer.Argument(help="weights (.safetensors) with their model card")],
        config: Annotated[Path | None, typer.Option(help="evaluate on this config's validation source")] = None,
        data: Annotated[Path | None, typer.Option(help="or on a patch set (.npz)")] = None,
        split: Annotated[str, typer.Option(help="name of the evaluation set in the card")] = "validation",
        unverified: Annotated[bool, typer.Option("--unverified", help="weights without a training split record: report as unverified")] = False,
        out: Annotated[Path | None, typer.Option(help="folder for figures (default: beside the weights)")] = None,
    ) -> None:
        """Held-out metrics, confusion matrix, ROC/PR curves, learning curves and the SR figure."""
        from models.datasets import PatchSet
        from models.evaluate import evaluate_weights
        from models.training.config import TrainConfigError, load_config
        from models.training.sources import load_source

        if (config is None) == (data is None):
            raise TrainConfigError("give exactly one of --config (its validation source) or --data (a .npz patch set)")
        if config is not None:
            patches = load_source(load_config(config).validation, keep_windows=True, sources=self.sources)
        else:
            patches = PatchSet.load(data)  # type: ignore[arg-type]
        _report(evaluate_weights(weights, patches, split_name=split, unverified=unverified, out_dir=out))

    def active_learn(
        self,
        weights: Annotated[Path, typer.Argument(help="weights (.safetensors) with their model card")],
        imagery: Annotated[Path | None, typer.Option(help="B04/B03/B02 reflectance raster the map was made from")] = None,
        labels: Annotated[Path | None, typer.Option(help="GeoPackage of labelled polygons (class field) over the imagery")] = None,
        out: Annotated[Path, typer.Option(help="GeoPackage to write the 'to_label' layer into")] = Path("to_label.gpkg"),
        n: Annotated[int, typer.Option(help="how many patches to ask for")] = 50,
        p_in: Annotated[float, typer.Option(help="share of queries from DBSS's inner branch")] = 0.5,
        simulate: Annotated[Path | None, typer.Option(help="instead: DBSS vs random on a training config's data")] = None,
        label_share: Annotated[float, typer.Option(help="simulation: final share of the pool labelled")] = 0.1,
    ) -> None:
        """Write the N most valuable patches of a map as a 'to_label' layer for QGIS (DBSS), or
        with --simulate compare DBSS and random queries at equal label budgets."""
        from models.training.config import TrainConfigError

        if simulate is not None:
            from models.training.config import load_config

            path = simulate_cycle(weights, load_config(simulate), label_share=label_share, p_in=p_in,
                                  sources=self.sources)
            console.print(f"active-learning curves: {path}")
            return
        if imagery is None:
            raise TrainConfigError("give --imagery (the reflectance raster of the map) or --simulate CONFIG")
        frame = query_map(weights, imagery, labels, n=n, p_in=p_in)
        from models.active import write_to_label

        write_to_label(frame, out)
        console.print(f"{len(frame)} patches to label: layer 'to_label' in {out} (fill its 'class' field in QGIS, "
                      f"then train with a user-labels source)")


def register(app: typer.Typer, sources: Mapping[str, SourceLoader] | None = None,
             window_sources: Mapping[str, WindowLoader] | None = None) -> None:
    """Add ``train``, ``evaluate`` and ``active-learn`` to ``app``.

    ``sources``: loaders of the sources models/ cannot load alone, by source name; the main CLI
    passes ``{"demo-world": pipeline.demo.dataset.demo_world_source}``. Without one, a config
    naming such a source ends with a one-line error saying to run it through ``landcover``.
    """
    commands = TrainingCommands(MappingProxyType(dict(sources or {})), MappingProxyType(dict(window_sources or {})))
    app.command("train")(commands.train)
    app.command("evaluate")(commands.evaluate)
    app.command("active-learn")(commands.active_learn)


# --------------------------------------------------------------------------- workers


def _report(metrics) -> None:
    line = f"{metrics.split}: n={metrics.n} accuracy {metrics.accuracy:.1%} macro F1 {metrics.macro_f1:.3f}"
    if metrics.dominant_accuracy is not None:
        line += f"; cells >= {metrics.dominant_threshold:.0%} one class: {metrics.dominant_accuracy:.1%} (n={metrics.dominant_n})"
    if metrics.macro_map is not None:
        line += f"; mAP macro {metrics.macro_map:.3f} micro {metrics.micro_map:.3f}"
    if metrics.sr_psnr is not None:
        line += f"; PSNR SR {metrics.sr_psnr:.2f} dB vs bicubic {metrics.bicubic_psnr:.2f} dB"
    console.print(line)


def embed(model, images: np.ndarray, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(softmax probabilities, penultimate embeddings) of uint8 LR patches."""
    import torch

    from models.preprocess import to_model_input

    probs, embs = [], []
    model.eval()
    with torch.no_grad():
        for s in range(0, len(images), batch):
            logits, e = model.forward_features(to_model_input(torch.from_numpy(images[s:s + batch])))
            probs.append(torch.softmax(logits, 1))
            embs.append(e)
    return torch.cat(probs).numpy(), torch.cat(embs).numpy()


def confident_share(probs: np.ndarray) -> np.ndarray:
    """Stand-in labels before the user has labelled anything: per predicted class, the patches at
    or above that class's median confidence. Relative, not a fixed cut-off: with label smoothing
    (0.15) many patches of a well-mapped class stay below 0.9, and a class with none above a fixed
    cut-off would get no centre at all."""
    guess, confidence = probs.argmax(1), probs.max(1)
    keep = np.zeros(len(probs), dtype=bool)
    for c in np.unique(guess):
        members = guess == c
        keep |= members & (confidence >= np.median(confidence[members]))
    return keep


def query_map(weights: Path, imagery: Path, labels: Path | None, *, n: int, p_in: float):
    """DBSS over every window of ``imagery``; centres from the user's labels, or - before any
    labelling - from the model's own confident predictions."""
    from shapely.geometry import box

    from models.active import dbss_select, to_label_frame
    from models.checkpoint import load_model
    from models.datasets import read_reflectance_raster, unlabelled_patches, user_label_patches

    model, _ = load_model(weights)
    refl, transform, crs = read_reflectance_raster(imagery)
    pool = unlabelled_patches(refl, transform, crs, source=Path(imagery).stem)
    probs, emb = embed(model, pool.images)
    if labels is not None:
        lab = user_label_patches(labels, imagery)
        lab_emb = embed(model, lab.images)[1]
        lab_y = lab.labels
        taken = set(lab.ids)
        keep = np.array([i not in taken for i in pool.ids])
    else:
        confident = confident_share(probs)
        lab_emb, lab_y = emb[confident], probs[confident].argmax(1)
        keep = np.ones(len(pool), bool)
    cand = np.flatnonzero(keep)
    q = dbss_select(emb[cand], lab_emb, lab_y, n, p_in)
    q = type(q)(cand[q.index], q.branch, q.score)
    geoms = [box(*f) for f in pool.footprints]  # type: ignore[union-attr]
    return to_label_frame(geoms, pool.crs, pool.ids, probs, q)


def simulate_cycle(weights: Path, cfg, *, label_share: float = 0.1, p_in: float = 0.5, cycles: int = 4,
                   seed: int = 0, sources: Mapping[str, SourceLoader] | None = None) -> Path:
    """DBSS (alone and with SSAS pseudo-labels) vs random on the demo world at equal label budgets, retraining only the head on
    frozen embeddings: pool = the config's training source, test = its validation source.
    Starts from 2 labelled samples per class and ends with ``label_share`` of the pool."""
    import json

    from models.active import plot_curves, simulate
    from models.checkpoint import load_model
    from models.files import atomic_write_text
    from models.training.sources import load_source

    model, card = load_model(weights)
    pool, test = load_source(cfg.train, sources=sources), load_source(cfg.validation, sources=sources)
    pool_emb, test_emb = embed(model, pool.images)[1], embed(model, test.images)[1]
    pool_y, test_y = pool.labels, test.labels
    rng = np.random.default_rng(seed)
    initial = np.concatenate([rng.permutation(np.flatnonzero(pool_y == c))[:2] for c in np.unique(pool_y[pool_y >= 0])])
    budget = int(round(label_share * len(pool)))
    per_cycle = max((budget - len(initial)) // cycles, 1)
    curves = [
        simulate(pool_emb, pool_y, test_emb, test_y, strategy=s, initial=initial, per_cycle=per_cycle,
                 cycles=cycles, p_in=p_in, use_ssas=ssas, seed=seed)
        for s, ssas in (("dbss", False), ("dbss", True), ("random", False))
    ]
    out = Path(weights).with_name(f"{Path(weights).stem}-active-learning.png")
    plot_curves(curves, out, f"{card.demo_label}\nhead retrained on frozen embeddings; pool {len(pool)}, "
                f"labels up to {label_share:.0%}; test: held-out {len(test)} patches")
    atomic_write_text(out.with_suffix(".json"), json.dumps([c.__dict__ for c in curves], indent=1))
    return out
