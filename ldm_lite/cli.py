"""The `ldm-lite` command: the stages of the pipeline from a shell.

    ldm-lite main                   # the README's main job: LDM-4 on shapes 32x32, end to end -> outputs/main/
    ldm-lite tour                   # the datasets: grids, captions, masks -> outputs/tour/
    ldm-lite train-ae --preset kl-f4 --dataset shapes --steps 2500 --ship ae-kl-f4-shapes32
    ldm-lite train-ldm --ae data/pretrained/ae-kl-f4-shapes32
    ldm-lite train-ldm --condition text --steps 3000          # text-to-image on captioned shapes
    ldm-lite sample --model data/pretrained/ldm-kl-f4-shapes32 --sampler dpm_solver_pp --steps 20
    ldm-lite sample --model <text model> --prompt "a large red circle" --guidance 3
    ldm-lite sample --lowres small.png                         # x4 super-resolution (also --image/--mask, --map)
    ldm-lite experiment tradeoff                               # LDM-{1,2,4,8,16} at equal budget
    ldm-lite evaluate --model data/pretrained/ldm-kl-f4-shapes32 --samplers ddim:100,dpm_solver_pp:20
    ldm-lite evaluate --model data/pretrained/ldm-kl-f4-shapes32-text --guidance 1 3   # held-out captions, judged
    ldm-lite bench                  # the benchmark scripts
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from .errors import UsageError

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported (see README: CPU threads)

log = logging.getLogger("ldm_lite")
I2I_CONDITIONS = ("sr", "sr-realistic", "inpaint", "semantic")
CONDITIONS = ("text", "frozen-text", "layout", "class", "shapes-class", "mnist-text", *I2I_CONDITIONS)
DATASET_HELP = "shapes, mnist, a folder of images (captions from name.txt / metadata.jsonl), or hub:<name or path>"


def _shown(path: Path) -> str:
    """A path as the user would type it: relative to the working directory when inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _done(what: str, where: Path, *next_commands: str) -> None:
    """The last words of a stage: where its output is and what to run next."""
    log.info("%s %s", what, _shown(where))
    for cmd in next_commands:
        log.info("next: %s", cmd)


def _model_dir(path: Path, flag: str) -> Path:
    """A model folder as the user named it: one with config.json, or a run folder whose model/ holds it."""
    if (path / "config.json").is_file():
        return path
    if (path / "model" / "config.json").is_file():
        log.info("%s %s: a run folder; using its model/", flag, _shown(path))
        return path / "model"
    if not path.exists():
        raise FileNotFoundError(f"{flag} {path}: no such folder")
    from .checkpoint import CheckpointError

    raise CheckpointError(f"{flag} {path}: no model there (no config.json in it or in its model/); pass the folder "
                          "a training stage wrote (its run folder or the model/ inside it)")


def _run_name(model: Path) -> str:
    """outputs/ae/kl-f4-x32/model -> kl-f4-x32: what a model folder is called."""
    return model.parent.name if model.name in ("model", "checkpoint") else model.name


def _check_dataset(name: str) -> None:
    """A --dataset that looks like a path must be a folder (else the message would be 'unknown dataset')."""
    if name in ("shapes", "mnist") or name.startswith("hub:") or Path(name).is_dir():
        return
    if "/" in name or os.sep in name or name.startswith((".", "~")) or Path(name).exists():
        raise FileNotFoundError(f"--dataset {name}: no such folder of images ({Path(name).expanduser().resolve()})")


def cmd_main(args) -> None:
    from dataclasses import replace

    from .paths import OUTPUTS_DIR
    from .pipeline import MainConfig, run_main, tour
    from .recipes import command_line, ship
    from .runtime import pick_device, smoke_mode

    out = args.out or OUTPUTS_DIR / "main"
    tour(out / "tour")
    cfg = MainConfig.for_device(pick_device(args.device), smoke_mode())
    if args.steps is not None:
        cfg = replace(cfg, ldm_steps=args.steps)
    if args.budget_minutes is not None:
        cfg = replace(cfg, max_train_seconds=60 * args.budget_minutes if args.budget_minutes > 0 else None,
                      min_ldm_steps=0)  # a budget asked for is a hard one: no step floor
    metrics = run_main(out, train_ae=args.train_ae, device=args.device, config=cfg, resume=not args.fresh)
    if args.ship:
        ship(out / "ldm" / "model", args.ship, metrics, command_line(),
             f"{args.ship}: LDM-4 on shapes 32x32 (unconditional)")
    if "recognisable" in metrics:
        log.info("main job: %.1f%% of %d samples recognisable, FID %.1f on classifier features",
                 100 * metrics["recognisable"], metrics["fid_n_fake"], metrics["fid"])
    _done("main job done: samples.png, curves.png, metrics.json and the model (ldm/model) in", out,
          f"ldm-lite sample --model {_shown(out / 'ldm')}",
          f"ldm-lite evaluate --model {_shown(out / 'ldm' / 'model')}")


def _run_recipe(name: str, out: Path | None, ship_as: str | None, fresh: bool = False, gpu: bool = False,
                **overrides) -> None:
    """Train recipe `name` with `overrides` (resumable under `out`; `fresh`: from step 0; `gpu`: its GPU preset);
    `ship_as` also writes data/pretrained/<ship_as>; ends saying where the model is and what to run next."""
    from dataclasses import asdict

    from .recipes import command_line, recipe, ship, train

    if "dataset" in overrides:
        _check_dataset(overrides["dataset"])
    if "autoencoder" in overrides and overrides["autoencoder"] != "identity" and Path(overrides["autoencoder"]).exists():
        overrides["autoencoder"] = str(_model_dir(Path(overrides["autoencoder"]), "--autoencoder"))
    import torch

    if gpu and overrides.get("device", "auto") in ("auto", "cpu") and not torch.cuda.is_available():
        log.warning("--gpu on a machine without CUDA: the GPU preset (4x the batch, 5x the steps) runs on the CPU "
                    "and takes many times the CPU recipe's time; leave --gpu out on a CPU")
    run = train(name, out, resume=not fresh, gpu=gpu, **overrides)
    log.info("%s: held-out metrics %s", name, {k: v for k, v in run.metrics.items() if isinstance(v, (int, float))})
    model = run.out / "model"
    kind = type(run.model).__name__
    nxt = {"Autoencoder": [f"ldm-lite train ldm --autoencoder {_shown(model)} --dataset {run.config.dataset}"],
           "LatentDiffusion": [f"ldm-lite sample --model {_shown(model)}", f"ldm-lite evaluate --model {_shown(model)}"]}
    _done(f"{name}: model saved to", model, *nxt.get(kind, []))
    if ship_as:
        cmd = command_line()
        r = recipe(name)
        ship(run.out / "model", ship_as, run.metrics, cmd, ship_as,
             body=f"{r.what}.\n\nRecipe `{name}` (`ldm_lite.recipes`), trained with:\n\n```json\n"
                  f"{json.dumps(asdict(run.config), indent=1)}\n```" + (f"\n\n{r.note}" if r.note else ""))


def cmd_train(args) -> None:
    from dataclasses import fields

    from .recipes import RECIPES, TrainConfig, recipes_table

    if args.recipe == "list":
        print(recipes_table())
        return
    if args.recipe not in RECIPES:
        raise UsageError(f"unknown recipe {args.recipe!r}; `ldm-lite train list` shows {len(RECIPES)}: "
                         f"{', '.join(RECIPES)}")
    overrides = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    _run_recipe(args.recipe, args.out, args.ship, fresh=args.fresh, gpu=args.gpu, **overrides)


def cmd_train_ae(args) -> None:  # = train ae (the flags of before)
    from .paths import OUTPUTS_DIR

    given = dict(preset=args.preset, dataset=args.dataset, resolution=args.resolution, n_train=args.n_train,
                latent_channels=args.latent_channels, base_channels=args.base_channels,
                codebook_size=args.codebook_size, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                ema=args.ema or None, loss=args.loss, perceptual_weight=args.perceptual_weight,
                lpips_net=args.lpips_net, kl_weight=args.kl_weight, learn_logvar=args.learn_logvar,
                disc_start=args.disc_start, seed=args.seed, device=args.device, threads=args.threads)
    given = {k: v for k, v in given.items() if v is not None}
    if not args.ema:
        given["ema"] = None  # --ema 0: no EMA
    name = args.name or args.ship
    _run_recipe("ae", args.out or (OUTPUTS_DIR / "ae" / name if name else None), args.ship, fresh=args.fresh, **given)


RECIPE_OF_CONDITION = {"text": "ldm-kl-f4-shapes32-text", "frozen-text": "ldm-kl-f4-shapes32-frozen-text",
                       "layout": "ldm-kl-f4-shapes32-layout", "class": "ldm-kl-f4-mnist32-class",
                       "shapes-class": "ldm-kl-f4-shapes32-class",
                       "mnist-text": "ldm-kl-f4-mnist32-text", "sr": "ldm-sr4-bicubic-shapes32",
                       "sr-realistic": "ldm-sr4-realistic-shapes32", "inpaint": "ldm-inpaint-shapes32",
                       "semantic": "ldm-semantic-shapes32"}


def cmd_train_ldm(args) -> None:  # = train <the condition's recipe> or train ldm --autoencoder ... --dataset ...
    if args.condition is None and args.ae is None:
        raise UsageError("train-ldm needs --ae <autoencoder folder> (e.g. data/pretrained/ae-kl-f4-shapes32), or "
                         "--condition for a conditional model")
    name = RECIPE_OF_CONDITION[args.condition] if args.condition else "ldm"
    given = {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "model_channels": args.model_channels,
             "prediction": args.prediction, "resolution": args.resolution, "n_train": args.n_train,
             "seed": args.seed, "device": args.device, "compile": args.compile, "threads": args.threads,
             "init_from": args.init and str(args.init), "latent_cache": args.latent_cache,
             "max_seconds": 60 * args.budget_minutes if args.budget_minutes else None}
    if args.condition is None:
        given.update(autoencoder=str(_model_dir(args.ae, "--ae")), dataset=args.dataset, max_shapes=args.max_shapes)
    _run_recipe(name, args.out, None, fresh=args.fresh, **{k: v for k, v in given.items() if v is not None})


def _load_ldm(path: Path, device: str):
    from .ldm import LatentDiffusion
    from .runtime import pick_device

    return LatentDiffusion.from_pretrained(_model_dir(path, "--model")).to(pick_device(device)).eval()


def _positive_int(text: str) -> int:
    """argparse type: an int >= 1 (`--n 0` or `--steps 0` is a usage error, not a crash)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _label_list(text: str) -> list[int]:
    """argparse type for --labels: comma-separated class indices, e.g. 0,1,2."""
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated class indices such as 0,1,2, got {text!r}") from None


def _image_file(out: Path, option: str = "--out") -> Path:
    """An output image path: refuses a folder (it would write <folder>.png beside it) and a name without suffix."""
    if out.is_dir():
        raise UsageError(f"{option} {out} is a folder; give a file name, e.g. {option} {out / 'samples.png'}")
    if not out.suffix:
        raise UsageError(f"{option} {out} has no file type; give a name ending in .png (e.g. {out}.png)")
    return out


def cmd_sample(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import torch

    from .paths import OUTPUTS_DIR
    from .plotting import image_grid

    spatial = {"sr": args.lowres, "inpaint": args.mask, "semantic": args.map}
    task = next((t for t, given in spatial.items() if given), None)
    if task is not None:  # image-to-image: one output image from files
        from .image_to_image import sample_to_file

        out = _sample_path(args, OUTPUTS_DIR / "samples" / f"{task}-{Path(spatial[task]).stem}-{args.steps}steps"
                                                              f"-seed{args.seed}.png")
        path = sample_to_file(task, out, lowres=args.lowres, image=args.image, mask=args.mask, seg_map=args.map,
                              degradation=args.degradation, model=args.model, steps=args.steps, seed=args.seed)
        log.info("wrote %s", path)
        return
    if args.model is None:
        raise UsageError("sample needs --model <LDM folder> (or --lowres / --mask / --map for image-to-image)")
    out = _image_file(args.out or OUTPUTS_DIR / "samples" / f"{args.model.name}-{args.sampler}{args.steps}-seed{args.seed}.png")
    ldm = _load_ldm(args.model, args.device)
    labels = args.labels
    prompts = [args.prompt] * args.n if args.prompt is not None else None
    negative = [args.negative_prompt] * args.n if args.negative_prompt is not None else None
    if args.init_image is not None:  # image-to-image with any model: SDEdit
        x = _sdedit(ldm, args, labels, prompts).cpu()
    else:
        x = ldm.sample(None if labels or prompts else args.n, labels=labels, prompts=prompts, negative_prompts=negative,
                       sampler=args.sampler, steps=args.steps, guidance_scale=args.guidance,
                       generator=torch.Generator().manual_seed(args.seed)).cpu()
    asked = [_run_name(args.model), f"{args.sampler}{args.steps}"]
    asked += [f"sdedit-{_slug(Path(args.init_image).stem)}-s{args.strength:g}"] if args.init_image else []
    asked += [_slug(args.prompt)] if args.prompt else []
    asked += [f"not-{_slug(args.negative_prompt)}"] if args.negative_prompt else []
    asked += ["labels" + "-".join(map(str, args.labels if isinstance(args.labels, list) else args.labels.split(",")))
              ] if args.labels else []
    asked += [f"g{args.guidance:g}"] if args.guidance != 1 else []
    out = _sample_path(args, OUTPUTS_DIR / "samples" / f"{'-'.join(asked)}-seed{args.seed}.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    title = (f"{_run_name(args.model)}: {args.sampler}, {args.steps} steps, guidance {args.guidance:g}"
             + (f", {args.prompt!r}" if args.prompt else "") + (f", labels {args.labels}" if args.labels else "")
             + (f", SDEdit of {Path(args.init_image).name} at strength {args.strength:g}" if args.init_image else ""))
    image_grid(x, ncols=8, title=title).savefig(out, dpi=110)
    log.info("wrote %s (%d images)", _shown(out), len(x))
    if args.separate:  # each image at its own resolution too: <out without .png>/000.png, 001.png, ...
        from PIL import Image

        folder = out.with_suffix("")
        folder.mkdir(exist_ok=True)
        for i, img in enumerate(x):
            arr = ((img.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
            Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(folder / f"{i:03d}.png")
        log.info("wrote %d images to %s/", len(x), _shown(folder))


def _sdedit(ldm, args, labels, prompts):
    """`sample --init-image X --strength S`: SDEdit (Meng et al. 2022) of one image with the model, --n times (or
    once per label / prompt): noised to t = S·T, then denoised by the sampler."""
    import torch
    from PIL import Image

    from .datasets import to_model_image
    from .spatial import sdedit

    if args.negative_prompt is not None:
        raise UsageError("--negative-prompt does not combine with --init-image; drop one of them")
    path = Path(args.init_image)
    if not path.is_file():
        raise FileNotFoundError(f"--init-image {path}: no such file")
    try:
        with Image.open(path) as im:
            x = to_model_image(im, ldm.config.image_size, ldm.autoencoder.config.in_channels)
    except OSError as e:
        raise UsageError(f"--init-image {path}: not a readable image ({e})") from None
    batch = {"label": torch.as_tensor(labels)} if labels else {"caption": prompts} if prompts else None
    n = len(labels) if labels else args.n
    return sdedit(ldm, x[None].expand(n, -1, -1, -1), args.strength, batch=batch, sampler=args.sampler,
                  steps=args.steps, guidance_scale=args.guidance, generator=torch.Generator().manual_seed(args.seed))


def _unit_interval(text: str) -> float:
    """argparse type for --strength: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1] (0 = the image itself, 1 = a new sample), got {value}")
    return value


def _slug(text: str, limit: int = 40) -> str:
    """'A large red circle!' -> 'a-large-red-circle' (a file-name part)."""
    import re

    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].rstrip("-") or "empty"


def _sample_path(args, default: Path) -> Path:
    """--out, refused when it exists unless --overwrite; else the default name, numbered (-2, -3...) when taken."""
    if args.out is not None:
        if args.out.exists() and not args.overwrite:
            raise UsageError(f"--out {args.out} exists; pass --overwrite to replace it, or another --out")
        return args.out
    path, k = default, 2
    while path.exists() and not args.overwrite:
        path, k = default.with_name(f"{default.stem}-{k}{default.suffix}"), k + 1
    return path


def cmd_experiment(args) -> None:
    from .metrics import format_table
    from .paths import OUTPUTS_DIR
    from .recipes import command_line
    from .runtime import pick_device
    from .tradeoff import TradeoffConfig, run_tradeoff, table6, write_report

    out = args.out or OUTPUTS_DIR / f"tradeoff-{args.protocol}"
    overrides = {k: v for k, v in {"budget": args.budget, "budget_seconds": args.budget_seconds,
                                   "steps": args.steps, "fs": tuple(args.fs) if args.fs else None}.items()
                 if v is not None}
    if args.fs is None or args.fs:  # `--fs` with no value: only collect what is there and plot it
        dev = pick_device(args.device)
        if args.smoke:
            cfg = TradeoffConfig.smoke(**overrides)
        elif args.protocol == "equal-steps":
            cfg = TradeoffConfig.equal_steps(dev, **overrides)
        else:
            cfg = TradeoffConfig.equal_compute(**overrides)
        run_tradeoff(cfg, out, device=dev)
    rows = write_report(out, args.report, command_line())
    print(format_table(table6(rows)))
    _done("report (results.csv, table6.md, fig6_training.png, fig7_sampling.png, samples.png) in", args.report or out)


def cmd_evaluate(args) -> None:
    from .checkpoint import write_json
    from .judge import evaluate, evaluate_on_dataset
    from .recipes import command_line, load

    ldm = load(args.model, args.device)
    results = {}
    default = "dpm_solver_pp:20" if ldm.conditioner is not None else "ddim:100,dpm_solver_pp:20"
    for spec in (args.samplers or default).split(","):
        sampler, _, steps = spec.partition(":")
        if not steps.isdigit():
            raise UsageError(f"--samplers takes sampler:steps pairs, e.g. ddim:50,dpm_solver_pp:20; got {spec!r}")
        if args.dataset is not None:  # one's own images: Inception FID / KID against its held-out part
            _check_dataset(args.dataset)
            results[spec] = evaluate_on_dataset(ldm, args.dataset, n=args.n or 256, n_real=args.n_real,
                                                seed=args.seed, sampler=sampler, steps=int(steps))
            continue
        results[spec] = evaluate(ldm, n=args.n, guidance_scales=tuple(args.guidance), n_real=args.n_real,
                                 n_boot=args.n_boot, seed=args.seed, sampler=sampler, steps=int(steps))
        log.info("%s: %s", spec, {k: v for k, v in results[spec].items() if not isinstance(v, (dict, list))})
    results["command"] = command_line()
    if args.out:
        write_json(args.out, results)
    print(json.dumps(results, indent=2))
    if args.out:
        _done("results written to", args.out)


def cmd_bench(args) -> None:
    import subprocess

    from .paths import REPO_ROOT

    scripts = sorted((REPO_ROOT / "benchmarks").glob("bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if args.only in s.name]
    for script in scripts:
        log.info("running %s", script.name)
        subprocess.run([sys.executable, str(script), *(["--smoke"] if args.smoke else [])], check=True)


def cmd_train_classifier(args) -> None:  # = train shapes-classifier-32
    _run_recipe("shapes-classifier-32", args.out, args.ship, steps=args.steps, batch_size=args.batch_size,
                seed=args.seed)


def cmd_train_segmenter(args) -> None:  # = train shapes-segmenter-32
    _run_recipe("shapes-segmenter-32", args.out, args.ship, steps=args.steps, batch_size=args.batch_size,
                seed=args.seed, threads=args.threads, n_eval=args.n_eval)


def cmd_tour(args) -> None:
    from .paths import OUTPUTS_DIR
    from .pipeline import tour

    out = args.out or OUTPUTS_DIR / "tour"
    tour(out, args.resolution)
    _done("dataset grids written to", out, "ldm-lite main")


def _threads(parser: argparse.ArgumentParser, default: int = 0) -> None:
    parser.add_argument("--threads", type=int, default=default,
                        help="CPU threads (torch.set_num_threads; 0 = torch's default)")


def _fresh(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fresh", action="store_true",
                        help="start from step 0 over the run in --out (default: resume it when its settings match)")


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per `recipes.TrainConfig` field (`--batch-size 32`, `--no-latent-cache`, `--ema none`); a flag left
    out keeps the recipe's value."""
    import ast

    source = (Path(__file__).with_name("recipes.py")).read_text()  # the field comments are the help texts
    tree = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == "TrainConfig")
    lines = source.splitlines()
    for node in tree.body:
        if not isinstance(node, ast.AnnAssign):
            continue
        name, kind = node.target.id, ast.unparse(node.annotation)
        comment = lines[node.lineno - 1].partition("#")[2].strip()
        flag = "--" + name.replace("_", "-")
        if kind == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=comment)
            continue
        base = {"int": int, "float": float, "str": str}[kind.split(" |")[0]]
        optional = "None" in kind
        parser.add_argument(flag, type=_optional(base) if optional else base, default=argparse.SUPPRESS,
                            help=comment + (" ('none' to unset)" if optional else ""))


def _optional(base):
    def parse(text: str):
        return None if text.lower() == "none" else base(text)
    parse.__name__ = base.__name__
    return parse


def cmd_convert(args) -> None:
    """ldm-lite convert compvis CKPT --config YAML --out DIR | ldm-lite convert diffusers MODEL_DIR --out DIR"""
    try:
        from . import interop

        if args.source == "compvis":
            if args.config is None:
                raise UsageError("convert compvis needs --config: the model's config.yaml from CompVis/latent-diffusion")
            model = interop.from_compvis(args.path, args.config, ema=args.ema, first_stage_only=args.first_stage_only)
            model.save_pretrained(args.out)
        else:
            from .ldm import LatentDiffusion

            interop.to_diffusers(LatentDiffusion.from_pretrained(args.path), args.out)
    except ImportError as e:  # the optional dependencies: say which, exit 2 like any user error
        raise UsageError(f"{e}; install the extra with: pip install 'ldm-lite[interop]' (diffusers, pyyaml)") from e
    log.info("wrote %s", args.out)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="ldm-lite", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"ldm-lite {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    m = sub.add_parser("main", help="the main job: LDM-4 on shapes 32x32 end to end (writes under outputs/main)")
    m.add_argument("--out", type=Path, default=None, help="output folder (default outputs/main)")
    m.add_argument("--train-ae", action="store_true", help="train the autoencoder too (default: use the shipped one)")
    m.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, ...")
    m.add_argument("--steps", type=int, default=None, help="LDM training steps (default: sized for the device)")
    m.add_argument("--budget-minutes", type=float, default=None,
                   help="wall-clock budget for LDM training, a hard one (default: 7 on a CPU, 2 on a GPU, with a "
                   "floor of MainConfig.min_ldm_steps steps on a busy machine; 0 = none)")
    m.add_argument("--ship", default=None, help="also copy the trained LDM to data/pretrained/<SHIP>")
    _fresh(m)
    _threads(m)
    m.set_defaults(func=cmd_main)

    t = sub.add_parser("tour", help="grids of the datasets with captions and masks")
    t.add_argument("--out", type=Path, default=None, help="default outputs/tour")
    t.add_argument("--resolution", type=int, default=32, help="image side of the grids")
    _threads(t)
    t.set_defaults(func=cmd_tour)

    tr = sub.add_parser("train", help="train any model by its recipe (`ldm-lite train list`); resumable, --ship",
                        epilog="Every TrainConfig field is a flag; a flag left out keeps the recipe's value "
                               "(`ldm-lite train list`, docs/recipes.md).")
    tr.add_argument("recipe", help="a recipe name (`list` prints them with what each changes)")
    tr.add_argument("--out", type=Path, default=None, help="run folder (default outputs/<recipe>; resumes from it)")
    tr.add_argument("--ship", default=None, help="also write the model to data/pretrained/<SHIP> with README + metrics")
    tr.add_argument("--gpu", action="store_true", help="the recipe's GPU preset: 4x the batch, 5x the steps, the "
                    "recipe's GPU sizes (`ldm-lite train list`, last column); flags given still win")
    _fresh(tr)
    _add_config_flags(tr)
    tr.set_defaults(func=cmd_train)

    a = sub.add_parser("train-ae", help="= train ae: a KL/VQ autoencoder (first stage); --ship writes it to data/pretrained")
    a.add_argument("--out", type=Path, default=None, help="run folder (default outputs/ae/<preset>[-c<c>]-<dataset><side>)")
    a.add_argument("--preset", default="kl-f4", help="kl-f4, kl-f8, vq-f4, ...")
    a.add_argument("--dataset", default="shapes", help=DATASET_HELP)
    a.add_argument("--name", default=None, help="run name: state under outputs/ae/<name> (default: --ship, else <preset>-<dataset><resolution>)")
    _fresh(a)
    a.add_argument("--ship", default=None, help="also write the model to data/pretrained/<SHIP> with README + metrics")
    a.add_argument("--resolution", type=int, default=32)
    a.add_argument("--n-train", type=int, default=20_000, help="shapes: number of training images")
    a.add_argument("--latent-channels", type=int, default=3)
    a.add_argument("--base-channels", type=int, default=32)
    a.add_argument("--codebook-size", type=int, default=256, help="VQ presets only")
    a.add_argument("--steps", type=int, default=3_000)
    a.add_argument("--batch-size", type=int, default=16)
    a.add_argument("--lr", type=float, default=4e-4)
    a.add_argument("--ema", type=float, default=0.999, help="EMA decay of the shipped weights (0 = none)")
    a.add_argument("--loss", choices=["full", "short"], default="full",
                   help="full: L1 + LPIPS + KL/VQ + PatchGAN from 3/4 of the steps (the paper's); short: L1 + KL/VQ")
    a.add_argument("--perceptual-weight", type=float, default=None, help="override the preset's LPIPS weight")
    a.add_argument("--lpips-net", default="vgg")
    a.add_argument("--kl-weight", type=float, default=1e-6)
    a.add_argument("--learn-logvar", action="store_true",
                   help="KL: learn the loss's log-variance (the reference keeps it at 0; the shipped KL models learned it)")
    a.add_argument("--disc-start", type=int, default=None, help="step at which the PatchGAN starts (-1 = never)")
    a.add_argument("--threads", type=int, default=1, help="CPU threads (torch.set_num_threads)")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--device", default="auto")
    a.set_defaults(func=cmd_train_ae)

    lt = sub.add_parser("train-ldm", help="= train ldm / train <recipe of --condition>: an LDM on a trained autoencoder")
    lt.add_argument("--ae", type=Path, default=None,
                    help="autoencoder folder (e.g. data/pretrained/ae-kl-f4-shapes32, or a train-ae run folder such "
                         "as outputs/ae/kl-f4-shapes32); an unconditional model")
    lt.add_argument("--condition", default=None, choices=CONDITIONS,
                    help="a conditional model on shapes/MNIST with its recipe: cross-attention (text, frozen-text, "
                         "layout, class, shapes-class, mnist-text) or concatenation (sr, sr-realistic, inpaint, semantic)")
    lt.add_argument("--budget-minutes", type=float, default=None, help="stop (after a checkpoint) after this long")
    lt.add_argument("--dataset", default=None, help=DATASET_HELP + " (default shapes)")
    lt.add_argument("--steps", type=int, default=None)
    lt.add_argument("--batch-size", type=int, default=None)
    lt.add_argument("--lr", type=float, default=None)
    lt.add_argument("--model-channels", type=int, default=None)
    lt.add_argument("--prediction", default=None, choices=["eps", "v"])
    lt.add_argument("--resolution", type=int, default=None)
    lt.add_argument("--n-train", type=int, default=None)
    lt.add_argument("--max-shapes", type=int, default=None)
    lt.add_argument("--seed", type=int, default=None,
                    help="batch order, t and noise; a conditional recipe's training images too (shapes seed)")
    lt.add_argument("--device", default="auto")
    lt.add_argument("--compile", nargs="?", const="default", default=None,
                    help="torch.compile the training step (mode: default, reduce-overhead = CUDA graphs, max-autotune)")
    lt.add_argument("--out", type=Path, default=None, help="default outputs/<recipe>, or outputs/ldm-<autoencoder>-<dataset><side> with --ae (resumes from it)")
    _fresh(lt)
    lt.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads; 0 = torch's default)")
    lt.add_argument("--init", type=Path, default=None,
                    help="image-to-image: start from this saved model's weights (fine-tuning, fresh optimizer)")
    lt.add_argument("--latent-cache", action=argparse.BooleanOptionalAction, default=None,
                    help="image-to-image sr/semantic: encode the training images once instead of every step")
    lt.set_defaults(func=cmd_train_ldm)

    s = sub.add_parser("sample", help="sample a grid from a trained LDM")
    s.add_argument("--model", type=Path, default=None,
                   help="LDM folder, or the run folder holding it in model/ (image-to-image: default the shipped one)")
    s.add_argument("--n", type=_positive_int, default=64, help="number of images (with --prompt: of that prompt)")
    s.add_argument("--labels", type=_label_list, default=None,
                   help="class labels for a class-conditional model, e.g. 0,1,2")
    s.add_argument("--prompt", default=None, help='a text-to-image model\'s prompt, e.g. "a large red circle"')
    s.add_argument("--negative-prompt", default=None, help="guide away from this prompt (with --guidance > 1)")
    s.add_argument("--lowres", default=None, help="super-resolution x4 of this low-res RGB PNG")
    s.add_argument("--image", default=None, help="inpainting: the RGB PNG to fill (with --mask)")
    s.add_argument("--mask", default=None, help="inpainting: PNG, white = the region to fill")
    s.add_argument("--map", default=None, help="semantic synthesis: greyscale PNG of class indices 0..6")
    s.add_argument("--degradation", default="bicubic", choices=["bicubic", "realistic"],
                   help="which shipped super-resolution model (trained on bicubic or realistic inputs)")
    s.add_argument("--sampler", default="ddim", choices=["ddpm", "ddim", "plms", "dpm_solver_pp"])
    s.add_argument("--steps", type=_positive_int, default=50)
    s.add_argument("--guidance", type=float, default=1.0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="auto")
    s.add_argument("--out", type=Path, default=None,
                   help="default outputs/samples/<model>-<sampler><steps>[-<prompt>][-labels..][-g<guidance>]-seed<seed>"
                        ".png, numbered -2, -3... when taken")
    s.add_argument("--overwrite", action="store_true", help="replace an existing --out (or the default file)")
    s.add_argument("--separate", action="store_true",
                   help="also write every image as its own PNG, into a folder named like the grid (without .png)")
    s.add_argument("--init-image", default=None,
                   help="SDEdit with any model: start from this image (resized to the model's size), noised by "
                        "--strength")
    s.add_argument("--strength", type=_unit_interval, default=0.6,
                   help="with --init-image: 0 = the image itself (reconstructed), 1 = a new sample (default 0.6)")
    _threads(s)
    s.set_defaults(func=cmd_sample)

    e = sub.add_parser("evaluate", help="unconditional: shapes score + FID on classifier features (bootstrap "
                                         "interval); conditional: accuracy of the condition + FID per guidance scale")
    e.add_argument("--model", type=Path, required=True,
                   help="model folder; a conditional model may also be a training checkpoint (<out>/checkpoint)")
    e.add_argument("--dataset", default=None,
                   help="an unconditional model of your own images: FID / KID on Inception features against this "
                        "dataset's held-out images (a folder's last 10%%, mnist, hub:<name>)")
    e.add_argument("--samplers", default=None,
                   help="comma-separated sampler:steps (default ddim:100,dpm_solver_pp:20; conditional dpm_solver_pp:20)")
    e.add_argument("--n", type=int, default=None,
                   help="samples (default 1000); conditional: held-out conditions per guidance scale (default 100)")
    e.add_argument("--guidance", type=float, nargs="+", default=[1.0, 3.0],
                   help="conditional models: classifier-free guidance scales to judge")
    e.add_argument("--n-real", type=int, default=1_000)
    e.add_argument("--n-boot", type=int, default=50)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device", default="auto")
    e.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    _threads(e)
    e.set_defaults(func=cmd_evaluate)

    b = sub.add_parser("bench", help="run the benchmark scripts in benchmarks/ (prints markdown tables)")
    b.add_argument("--only", default=None, help="run only scripts whose name contains this")
    b.add_argument("--smoke", action="store_true", help="tiny sizes (seconds): checks that they run, measures nothing")
    b.set_defaults(func=cmd_bench)

    x = sub.add_parser("experiment", help="the paper's experiments; tradeoff: LDM-{1,2,4,8,16,32} (§4.1)")
    x.add_argument("name", choices=["tradeoff"])
    x.add_argument("--protocol", choices=["equal-steps", "equal-compute"], default="equal-steps",
                   help="equal-steps (default; §4.1: 64x64, the fair first stages, 2,000 steps each on a CPU) or "
                        "equal-compute (32x32, the same CPU seconds per model: the committed second view)")
    x.add_argument("--out", type=Path, default=None, help="default outputs/tradeoff-<protocol> (resumes what it finds)")
    x.add_argument("--fs", type=int, nargs="*", default=None,
                   help="downsampling factors (default: the protocol's); with no value: report only (no training)")
    x.add_argument("--budget", choices=["time", "steps"], default=None, help="override the protocol's budget")
    x.add_argument("--budget-seconds", type=float, default=None)
    x.add_argument("--steps", type=int, default=None, help="with --budget steps")
    x.add_argument("--smoke", action="store_true", help="tiny sizes (seconds)")
    x.add_argument("--report", type=Path, default=None, help="folder for CSV/JSON/PNG (default: --out)")
    x.add_argument("--device", default="auto")
    _threads(x)
    x.set_defaults(func=cmd_experiment)

    c = sub.add_parser("train-classifier", help="= train shapes-classifier-32: the judge of the shapes score and FID")
    c.add_argument("--ship", nargs="?", const="shapes-classifier-32", default=None,
                   help="also write it to data/pretrained/<SHIP> (default name shapes-classifier-32: replaces the judge "
                        "every FID in the README depends on)")
    c.add_argument("--out", type=Path, default=None, help="default outputs/shapes-classifier-32")
    c.add_argument("--steps", type=int, default=800)
    c.add_argument("--batch-size", type=int, default=128)
    c.add_argument("--seed", type=int, default=0)
    _threads(c)
    c.set_defaults(func=cmd_train_classifier)

    g = sub.add_parser("train-segmenter", help="= train shapes-segmenter-32: the mask-agreement judge, validated")
    g.add_argument("--ship", default=None, help="also write it to data/pretrained/<SHIP>")
    g.add_argument("--out", type=Path, default=None, help="default outputs/segmenter (model/ and metrics.json)")
    g.add_argument("--steps", type=int, default=600)
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--n-eval", type=int, default=1000, help="held-out 32x32 images (and a fifth as many 64x64 canvases)")
    g.add_argument("--threads", type=int, default=0, help="CPU threads (torch.set_num_threads; 0 = torch's default)")
    g.set_defaults(func=cmd_train_segmenter)
    cv = sub.add_parser("convert", help="in and out of the kit: CompVis latent-diffusion checkpoints -> ldm_lite "
                                         "folders, ldm_lite LDMs -> diffusers folders")
    cv.add_argument("source", choices=["compvis", "diffusers"],
                    help="compvis: read a released .ckpt/.safetensors + its config.yaml; diffusers: write a "
                         "LatentDiffusion folder as a diffusers folder (LDMPipeline when unconditional)")
    cv.add_argument("path", type=Path, help="compvis: the checkpoint; diffusers: the ldm_lite model folder")
    cv.add_argument("--config", type=Path, default=None, help="compvis: the model's config.yaml")
    cv.add_argument("--out", type=Path, required=True, help="the folder to write (written atomically)")
    cv.add_argument("--ema", action=argparse.BooleanOptionalAction, default=None,
                    help="compvis: the UNet's EMA weights (model_ema.*) or not (default: EMA when the checkpoint has it)")
    cv.add_argument("--first-stage-only", action="store_true", help="compvis: write only an LDM's first stage")
    cv.add_argument("--threads", type=int, default=0, help="CPU threads (torch.set_num_threads; 0 = torch's default)")
    cv.set_defaults(func=cmd_convert)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    from .fit import TrainingDiverged

    if getattr(args, "threads", 0):  # every stage with --threads: torch's intra-op threads, set once here
        import torch

        torch.set_num_threads(args.threads)
    try:
        args.func(args)
    # the user's to fix: one line on stderr, exit 2 (UsageError includes CheckpointError and NonFiniteError);
    # any other exception is a bug and keeps its traceback
    except (UsageError, FileNotFoundError, TrainingDiverged) as e:
        message = " ".join(str(e).split()) or type(e).__name__
        parser.exit(2, f"ldm-lite {args.command}: error: {message}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
