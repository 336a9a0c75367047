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
        from models.training.timm import (
            is_timm_config,
            load_timm_config,
            run_timm_training,
        )

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
        config: Annotated[Path | None, typer.Option(help="evaluate on this config's validation source (a seed config's "
                                                        "patches or a timm config's windows)")] = None,
        data: Annotated[Path | None, typer.Option(help="or on a patch set (.npz, seed family)")] = None,
        labels: Annotated[Path | None, typer.Option(help="or on your labelled windows: a GeoPackage whose layer has "
                                                        "a filled class field (e.g. the map's landcover.gpkg)")] = None,
        imagery: Annotated[Path | None, typer.Option(help="with --labels: the imagery they sit on (the map's composite.tif)")] = None,
        layer: Annotated[str, typer.Option(help="with --labels: the labelled layer")] = "to_label",
        bands: Annotated[str | None, typer.Option(help="with --labels: file band numbers of the model's bands (e.g. "
                                                       "3,2,1) when the imagery's bands are not named")] = None,
        split: Annotated[str | None, typer.Option(help="name of the evaluation set (default: validation; labels with --labels)")] = None,
        unverified: Annotated[bool, typer.Option("--unverified", help="no proof the data are held out (no split record, "
                                                 "or labels the model learned from): report as unverified")] = False,
        out: Annotated[Path | None, typer.Option(help="folder for figures and the metrics JSON (default: beside the "
                                                      "weights; with --labels, beside the labels)")] = None,
    ) -> None:
        """Held-out metrics and figures of any window classifier: on a config's validation source or a
        patch set (confusion matrix, ROC/PR, learning curves, the SR figure; the card records them), or
        on your own labels (agreement, confusion matrix; a JSON beside the labels, the card untouched)."""
        from models.training.config import TrainConfigError

        if sum(x is not None for x in (config, data, labels)) != 1:
            raise TrainConfigError("give exactly one of --config (its validation source), --data (a .npz patch set) "
                                   "or --labels MAP.gpkg --imagery composite.tif (your labelled windows)")
        if labels is not None:
            from models.evaluate import evaluate_labels

            if imagery is None:
                raise TrainConfigError("--labels needs --imagery: the image the labelled windows sit on (the map's composite.tif)")
            _report_labels(evaluate_labels(weights, labels, imagery, layer=layer, bands=parse_bands(bands),
                                           unverified=unverified, out_dir=out, split_name=split or "labels"))
            return
        _report(_evaluate_dataset(weights, config, data, split or "validation", unverified, out, self.sources,
                                  self.window_sources))

    def active_learn(
        self,
        weights: Annotated[Path, typer.Argument(help="weights (.safetensors) with their model card")],
        imagery: Annotated[Path | None, typer.Option(help="the map's composite.tif (`landcover map --save-composite`): "
                                                       "the model's bands, named by band description")] = None,
        labels: Annotated[Path | None, typer.Option(help="GeoPackage with labelled windows (class field) over the imagery")] = None,
        layer: Annotated[str, typer.Option(help="with --labels: the labelled layer")] = "to_label",
        out: Annotated[Path, typer.Option(help="GeoPackage to write the 'to_label' layer into (the map's landcover.gpkg "
                                               "lists it in the map's .qgz)")] = Path("to_label.gpkg"),
        n: Annotated[int, typer.Option(min=1, help="how many windows to ask for")] = 50,
        p_in: Annotated[float, typer.Option(help="share of queries from DBSS's inner branch")] = 0.5,
        bands: Annotated[str | None, typer.Option(help="file band numbers of the model's bands, in the card's order "
                                                       "(e.g. 3,2,1), when the imagery's bands are not named")] = None,
        simulate: Annotated[Path | None, typer.Option(help="instead: DBSS vs random on a training config's data")] = None,
        label_share: Annotated[float, typer.Option(help="simulation: final share of the pool labelled")] = 0.1,
    ) -> None:
        """Write the N windows of a map the model is least sure of (DBSS on its own embeddings) as a
        'to_label' layer with a QGIS form of the model's classes, or with --simulate compare DBSS and
        random queries at equal label budgets. Works for every model family with windows."""
        from models.training.config import TrainConfigError

        if simulate is not None:
            from models.training.config import load_config

            path = simulate_cycle(weights, load_config(simulate), label_share=label_share, p_in=p_in,
                                  sources=self.sources)
            console.print(f"active-learning curves: {path}")
            return
        if imagery is None:
            raise TrainConfigError("give --imagery (the map's composite.tif, from `landcover map --save-composite`) "
                                   "or --simulate CONFIG")
        picked = query_map(weights, imagery, labels, n=n, p_in=p_in, layer=layer, bands=parse_bands(bands))
        project = write_query(picked, out)
        if len(picked.frame) < n:
            console.print(f"[yellow]{len(picked.frame)} of the {n} windows asked for:[/yellow] {picked.shortfall}",
                          highlight=False, soft_wrap=True)
        fields = "' and '".join(picked.fields)
        console.print(f"{len(picked.frame)} windows to label: layer 'to_label' in {out}"
                      + (f" (listed in {project})" if project else "")
                      + f"; pick each window's class in its '{fields}' field in QGIS, then "
                      f"`landcover finetune {weights} --labels {out} --imagery {imagery}`", highlight=False, soft_wrap=True)

    def finetune(
        self,
        base: Annotated[Path, typer.Argument(help="the weights to continue from (.safetensors with their card)")],
        labels: Annotated[Path, typer.Option(help="GeoPackage with the labelled layer (e.g. the map's landcover.gpkg)")],
        imagery: Annotated[Path, typer.Option(help="the imagery the labels sit on (the map's composite.tif)")],
        layer: Annotated[str, typer.Option(help="the labelled layer")] = "to_label",
        name: Annotated[str | None, typer.Option(help="name of the new weights (default: <base>-ft-<date>)")] = None,
        out_dir: Annotated[Path | None, typer.Option(help="folder for the new weights (default: the labels' folder)")] = None,
        holdout: Annotated[float, typer.Option(help="share of the labels held out to measure before/after")] = 1 / 3,
        epochs: Annotated[int | None, typer.Option(min=1, help="epochs (default: 6)")] = None,
        replay_windows: Annotated[int, typer.Option(min=0, help="at most this many replayed training windows")] = 256,
        bands: Annotated[str | None, typer.Option(help="file band numbers of the model's bands (e.g. 3,2,1) when "
                                                       "the imagery's bands are not named")] = None,
        seed: Annotated[int, typer.Option(help="seed of the hold-out draw, the replay sample and training")] = 0,
        threads: Annotated[int | None, typer.Option(min=1, help="CPU threads (default: all)")] = None,
        ssas: Annotated[bool, typer.Option("--ssas/--no-ssas", help="then a short second round with SSAS pseudo-labels: "
                                           "unlabelled windows of the imagery whose top class the base and the "
                                           "fine-tuned model agree on (at most 4 per label)")] = False,
    ) -> None:
        """Continue training from BASE on your labels joined to a replay of the data BASE was trained on
        (the demo world for demo models); prints and records agreement before and after on held-out labels
        and on the replay's validation windows. The documented way to learn from labels (`train` trains
        from a dataset)."""
        from models.finetune import FinetuneSettings, finetune
        from pipeline.demo.replay import demo_replay

        settings = FinetuneSettings(name=name, holdout=holdout, epochs=epochs, seed=seed, threads=threads, ssas=ssas)
        result = finetune(base, labels, imagery, layer=layer, out_dir=out_dir, settings=settings,
                          replay_loader=lambda card, w: demo_replay(card, w, max_train=replay_windows, seed=seed),
                          bands=parse_bands(bands), log=lambda line: console.print(line, highlight=False, soft_wrap=True))
        before, after, m = result.report["before"], result.report["after"], result.report["metrics"]
        console.print(f"held-out labels (n={m['finetune_held_out_n']}): agreement {before['held_out']:.1%} -> "
                      f"{after['held_out']:.1%}; replay validation (n={m['finetune_replay_validation_n']}): "
                      f"{before['replay_validation']:.1%} -> {after['replay_validation']:.1%}", highlight=False)
        console.print(f"weights: {result.weights} ({result.seconds:.0f} s); map with `landcover map --model {result.weights}`",
                      highlight=False, soft_wrap=True)
        typer.echo(str(result.weights))


def register(app: typer.Typer, sources: Mapping[str, SourceLoader] | None = None,
             window_sources: Mapping[str, WindowLoader] | None = None) -> None:
    """Add ``train``, ``evaluate``, ``active-learn`` and ``finetune`` to ``app``.

    ``sources``: loaders of the sources models/ cannot load alone, by source name; the main CLI
    passes ``{"demo-world": pipeline.demo.dataset.demo_world_source}``. Without one, a config
    naming such a source ends with a one-line error saying to run it through ``landcover``.
    """
    commands = TrainingCommands(MappingProxyType(dict(sources or {})), MappingProxyType(dict(window_sources or {})))
    app.command("train")(commands.train)
    app.command("evaluate")(commands.evaluate)
    app.command("active-learn")(commands.active_learn)
    app.command("finetune")(commands.finetune)


# --------------------------------------------------------------------------- workers


def _evaluate_dataset(weights: Path, config: Path | None, data: Path | None, split: str, unverified: bool,
                      out: Path | None, sources: Mapping[str, SourceLoader], window_sources: Mapping[str, WindowLoader]):
    """A config's validation source (a timm config's windows, a seed config's patches) or a patch set."""
    from models.checkpoint import read_card
    from models.datasets import PatchSet
    from models.evaluate import evaluate_weights, evaluate_windows, require_patch_model
    from models.training.timm import is_timm_config

    card = read_card(weights)  # None: a bare seed checkpoint, which load_model reads or names the problem of
    if card is not None:
        card.require_windows("evaluation")
    if config is not None and is_timm_config(config):
        from models.bands import common_name
        from models.evaluate import EvaluationError

        if card is None:
            raise EvaluationError(f"no model card beside {weights} ({Path(weights).with_suffix('.json').name}): a timm "
                                  "config's windows are cut to the card's bands")
        from models.training.timm import load_timm_config, load_windows

        cfg = load_timm_config(config)
        windows = load_windows(cfg.validation, [common_name(b) for b in card.bands], window_sources)
        return evaluate_windows(weights, windows, config_name=cfg.name, split_name=split, unverified=unverified,
                                out_dir=out)
    if card is not None:
        require_patch_model(card)  # before reading patches the model could not use
    if config is not None:
        from models.training.config import load_config
        from models.training.sources import load_source

        patches = load_source(load_config(config).validation, keep_windows=True, sources=sources)
    else:
        patches = PatchSet.load(data)  # type: ignore[arg-type]
    return evaluate_weights(weights, patches, split_name=split, unverified=unverified, out_dir=out)


def _report_labels(metrics) -> None:
    line = (f"{metrics.split}: n={metrics.n} agreement {metrics.agreement:.1%} (own class = the model's top class)"
            + (f"; listed classes scored >= {metrics.threshold:g}: {metrics.scored:.1%}" if metrics.scored is not None else "")
            + (f"; macro F1 {metrics.scores.macro_f1:.3f}" if metrics.scores is not None else "")
            + (f"; {metrics.left_out} rows the model learned from left out" if metrics.left_out else ""))
    console.print(line, highlight=False, soft_wrap=True)


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
    """(softmax probabilities, penultimate embeddings) of uint8 LR patches of a seed-family model
    (what the --simulate comparison trains heads on)."""
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
    """Stand-in labels before the user has labelled anything (see :func:`models.active.confident_share`)."""
    from models.active import confident_share as share

    return share(probs)


def parse_bands(text: str | None) -> list[int] | None:
    """``"3,2,1"`` -> [3, 2, 1]; None stays None."""
    from models.imagery import ImageryError

    if text is None:
        return None
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise ImageryError(f"--bands {text!r} must be file band numbers separated by commas, e.g. 3,2,1") from None


@dataclass(frozen=True)
class Picked:
    """The windows active learning picked, as the to_label layer, and how to style it."""

    frame: object  # GeoDataFrame
    fields: tuple[str, ...]
    classes: list[tuple[int, str, tuple[int, int, int]]]  # (code, name, rgb) of the model's classes
    shortfall: str = ""  # why fewer than asked, if so


def query_map(weights: Path, imagery: Path, labels: Path | None, *, n: int, p_in: float, layer: str = "to_label",
              bands: list[int] | None = None) -> Picked:
    """DBSS over every window of ``imagery`` (the card's bands, windows of its footprint) in the
    model's own embedding; centres from the user's labelled windows, or - before any labelling -
    from the model's own confident top classes (multi-label models: the top class too)."""
    from shapely.geometry import box

    from models.active import (
        dbss_select,
        label_fields,
        query_shortfall,
        stand_in_centres,
        to_label_frame,
    )
    from models.imagery import classify, cut_windows, read_imagery, windows_at
    from models.predictor import Predictor

    predictor = Predictor.from_path(weights, device="cpu")
    card = predictor.card
    card.require_windows("active learning")
    image = read_imagery(imagery, card, bands=bands)
    pool = cut_windows(image, card)
    pred = classify(predictor, pool.data)
    probs, emb = pred.probs, pred.embeddings
    fields = label_fields(card.task)
    keep = np.ones(len(pool), bool)
    if labels is not None:
        from models.user_labels import main_classes, read_labels

        (centres, _), _, ids, written = read_labels(labels, layer, card, fields, minimum=2, purpose="DBSS")
        done = windows_at(image, card, centres, ids)
        lab_emb = classify(predictor, done.data).embeddings
        lab_y = main_classes(written, card)  # a multi-label row's first field (documented in models.active)
        taken = {tuple(o) for o in done.origins}
        keep = np.array([tuple(o) not in taken for o in pool.origins], bool)
    else:
        lab_emb, lab_y = stand_in_centres(probs, emb)
    cand = np.flatnonzero(keep)
    shortfall = query_shortfall(n, len(cand), len(pool), imagery)
    q = dbss_select(emb[cand], lab_emb, lab_y, n, p_in)
    q = type(q)(cand[q.index], q.branch, q.score)
    frame = to_label_frame([box(*b) for b in pool.bounds], pool.crs, pool.ids, probs, q,
                           class_names=card.classes, class_codes=card.class_codes, fields=fields)
    legend = {c.name: c for c in card.legend.classes}
    classes = [(int(legend[name].code), name, tuple(legend[name].rgb)) for name in card.classes]
    return Picked(frame, fields, classes, shortfall)


def write_query(picked: Picked, out: Path) -> Path | None:
    """Write the to_label layer with its default style into ``out`` (whole-file atomic) and list it
    in the map's .qgz beside it; returns the project updated, if any."""
    from models.active import write_to_label
    from pipeline.export import labelling

    write_to_label(picked.frame, out, styles=labelling.style_rows(picked.classes, picked.fields))
    crs = picked.frame.crs.to_wkt() if picked.frame.crs is not None else None  # type: ignore[attr-defined]
    return labelling.add_to_project(out, picked.classes, picked.fields, crs) if crs else None


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
