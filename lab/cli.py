"""Headless commands: `python -m lab <command> --help`.

Examples:
    python -m lab models
    python -m lab generate --prompt "Why is the sky blue?" --max-new-tokens 64
    python -m lab generate --prompt "Hi" --system "Answer like a pirate." --model ./my-model --precision 4bit
    python -m lab train sft --data demos.jsonl --max-steps 30 --learning-rate 1e-4
    python -m lab train sft --config workspace/runs/<run id>/config.yaml      # reproduce a run
    python -m lab score --reward <run id> --prompt "Hi" --response "Hello!" --response "Go away."
    python -m lab train dpo --data workspace --exclude-flagged --beta 0.1
    python -m lab train rloo --scenario Truthfulness --reward "model:<reward run> - 0.2*refusal"
    python -m lab train dpo --config workspace/runs/<run id>/config.yaml --prepare-only  # then: accelerate launch
    python -m lab eval --models base,<run id> --prompts held_out.jsonl --judge <reward run id>
    python -m lab eval --models base,<run id> --truthfulqa TruthfulQA.csv --system "Answer truthfully." --out r.json
    python -m lab export gguf <run id> --out my-model      # also: adapter (with its model card), merged
    python -m lab pipeline --scenario truthfulness          # the whole recipe in a fresh workspace of the scenario
    python -m lab pipeline --scenario truthfulness --workspace workspaces/truthfulness --resume
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from lab.export import GGUF_DTYPES, KINDS
from lab.fields import parse_overrides
from lab.formats.detect import FORMATS
from lab.generate import GenerationSettings, PromptTooLongError, build_messages, stream_chat
from lab.models import ModelError, ModelManager, list_models
from lab.refs import BASE_VIEW, DEFAULT_MODEL, DEVICES, PRECISIONS
from lab.train import get_method, training_methods

WORKSPACE_DATA = "workspace"  # --data workspace: the workspace's own data, as no --data does


def cmd_models(args: argparse.Namespace) -> int:
    """List the models the lab can load here and whether each is already converted in the cache."""
    for row in list_models():
        state = "cached" if row["cached"] else ("available" if row["available"] else "missing")
        print(f"{row['name']:<28} {row['kind']:<24} {state:<10} {row['path']}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """Stream one reply to --prompt from --model (the embedded default unless given)."""
    messages = build_messages(args.prompt, args.system)  # an empty prompt is refused before anything loads
    settings = GenerationSettings(args.temperature, args.top_p, args.max_new_tokens, args.seed, args.stop or [])
    manager = ModelManager(on_status=lambda message: print(message, file=sys.stderr))
    manager.load(args.model, args.precision, args.device)
    view = BASE_VIEW
    if args.adapter:
        view = Path(args.adapter).name
        manager.add_adapter(view, args.adapter)
    printed = ""
    for text in stream_chat(partial(manager.use, view), messages, settings):
        print(text[len(printed) :], end="", flush=True)
        printed = text
    print()
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train one method headless with a terminal progress bar; prints where the adapter is."""
    from lab import jobs
    from lab.presets import model_presets
    from lab.store import Store

    method = get_method(args.method)
    overrides = {**parse_overrides(args.set or []), **_field_flags(args)}
    if args.config:  # a run's config.yaml reproduces the run: its own data file too, unless --data says otherwise
        config = method.config.from_file(args.config).replace(**overrides)
        data_file = config.data if args.data is None else args.data
    else:
        presets = model_presets()
        if args.preset not in presets:
            raise ValueError(f"--preset {args.preset}: choose one of {', '.join(presets)}")
        config = method.config_for(presets[args.preset], overrides, where="command line")
        data_file = args.data or ""
    data_file = "" if data_file == WORKSPACE_DATA else data_file
    _print_memory_estimate(args.method, config)
    store = Store(args.workspace)
    busy = jobs.active_run(store)
    if busy is not None:
        raise ValueError(f"Run {busy.id} is training in this workspace; wait for it or stop it first.")
    options = {}
    if method.data == "demonstrations":
        options = {"origins": args.origin}
    elif method.data == "preferences":
        from lab.train.snapshot import count_pairs, preference_votes

        options = {"exclude_annotators": args.exclude, "exclude_flagged": args.exclude_flagged}
        options["scenario"] = args.scenario or ""
        votes = preference_votes(store, data_file, **options)[0]
        print(count_pairs(votes, config.eval_fraction).text(), file=sys.stderr)
    elif method.data == "prompts":
        options = {"scenario": args.scenario or ""}
    run = jobs.prepare(store, args.method, config, name=args.name or "", data_file=data_file, **options)
    print(f"Run {run.id}: {jobs.run_dir(store, run.id)}", file=sys.stderr)
    if args.prepare_only:  # for accelerate launch: every process then trains this one prepared run
        print(f"Prepared. Train it on several GPUs with: accelerate launch -m lab run {run.id}", file=sys.stderr)
        print(run.id)
        return 0
    with _tee(jobs.run_dir(store, run.id) / "log.txt"):
        try:
            return jobs.execute(store, run.id)
        except jobs.JobError:
            store.update_run(
                run.id, expect=("queued",), status="failed", error="Not started: another run was training."
            )
            raise


def _field_flags(args: argparse.Namespace) -> dict:
    """The config fields set by their own flags (--lora-r 8 …), by field name."""
    return {key.removeprefix("field_"): value for key, value in vars(args).items() if key.startswith("field_")}


def _print_memory_estimate(method: str, config) -> None:
    """The estimated peak memory, term by term, before training (a warning, never a refusal: it is an estimate)."""
    from lab.train.memory import estimate_memory

    try:
        estimate = estimate_memory(method, config)
    except (ModelError, OSError, ValueError) as err:
        print(f"No memory estimate: {err}", file=sys.stderr)
        return
    print(
        "\n".join(["Estimated memory:", *("  " + line for line in estimate.lines()), estimate.summary()]),
        file=sys.stderr,
    )


def cmd_run(args: argparse.Namespace) -> int:
    """Train a run the app prepared and claimed (the app starts this as a child process)."""
    from lab import jobs
    from lab.store import Store

    return jobs.execute(Store(args.workspace), args.run_id)


def cmd_import(args: argparse.Namespace) -> int:
    """Import a dataset file (JSONL, JSON, CSV or Parquet) where its shape says: demonstrations, preference pairs or
    unpaired ratings. The shape is detected (--format forces one); all or nothing."""
    from lab import Lab

    print(Lab(args.workspace).import_file(args.file, args.format, args.good_as_demonstrations).summary())
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export accepted demonstrations, or preference pairs, as JSONL in TRL's conversational formats; or a run's
    adapter with its model card, the adapter merged into its base, or a GGUF file for llama.cpp and Ollama."""
    from lab.data import export_demonstrations
    from lab.export import export_run
    from lab.preferences import export_preferences
    from lab.store import Store

    store = Store(args.workspace)
    if args.what in KINDS:
        if not args.run:
            raise ValueError(f"export {args.what} needs the run's id: python -m lab export {args.what} RUN --out DIR")
        to_stderr = lambda message: print(message, file=sys.stderr)  # noqa: E731
        folder = export_run(
            store, args.run, args.what, args.out, dtype=args.dtype, overwrite=args.overwrite, progress=to_stderr
        )
        print(f"Exported run {args.run} ({args.what}) to {folder}")
        return 0
    if args.run:
        raise ValueError(f"export {args.what} takes no run id: it exports the workspace's {args.what}")
    if args.what == "demonstrations":
        count = export_demonstrations(store, args.out, args.origin or None)
    else:
        count = export_preferences(store, args.out, tuple(args.exclude or ()), negatives=args.negatives)
    print(f"Exported {count} {'unpaired rows' if args.negatives else args.what} to {args.out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate models on held-out prompts in this process: win rates by a judge in both orders, KL from the base,
    length, rule checks, TruthfulQA MC1/MC2 (with --truthfulqa CSV); prints the table and writes report.json."""
    from lab import Lab, jobs

    lab = Lab(args.workspace)
    busy = jobs.active_run(lab.store)
    if busy is not None:
        raise ValueError(f"Run {busy.id} is running in this workspace; wait for it or stop it first.")
    overrides = {**parse_overrides(args.set or []), **_field_flags(args)}
    run = lab.evaluate(
        prompts=args.prompts,
        scenario=args.scenario,
        experiment=args.experiment,
        preset=args.preset,
        name=args.name or "",
        start=False,
        **overrides,
    )
    print(f"Run {run.id}: {run.folder}", file=sys.stderr)
    with _tee(run.folder / "log.txt"):
        code = jobs.execute(lab.store, run.id)
    if code == 0 and args.out and run.report() is not None:
        Path(args.out).write_text(json.dumps(run.report(), indent=1), encoding="utf-8")
    return code


def cmd_pipeline(args: argparse.Namespace) -> int:
    """Run the whole recipe on a scenario: SFT → reward model → DPO (or RLOO) → before/after evaluation, each step a
    run on the job engine; prints progress lines, then the before/after table. Without --workspace it runs in a fresh
    workspace seeded with the scenario; --resume continues the workspace's last pipeline of the scenario from the
    step it stopped or failed at. Ctrl-C stops at the current step."""
    from lab.pipeline import PipelineError, latest, open_workspace, step_overrides

    if args.resume:
        if args.workspace is None:
            raise PipelineError("--resume continues a pipeline in a workspace: give its --workspace.")
        lab = open_workspace(args.scenario, args.workspace)
        pipeline = latest(lab, args.scenario)
        if pipeline is None:
            raise PipelineError(f"No pipeline of scenario '{args.scenario}' in {lab.store.root} to resume.")
        pipeline.resume()
    else:
        lab = open_workspace(args.scenario, args.workspace, args.truthfulqa or None)
        options = {"preset": args.preset, "model": args.model, "steps": args.steps, "system": args.system}
        options.update(step_overrides(parse_overrides(args.set or [])))
        pipeline = lab.pipeline(args.scenario, args.method, **options)
    print(f"Pipeline {pipeline.id} in {lab.store.root}", file=sys.stderr)
    to_stderr = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731  (stdout carries the table)
    try:
        state = pipeline.wait(echo=to_stderr)
    except KeyboardInterrupt:
        return 130
    if state != "done":
        return 1
    print(pipeline.table().to_string(index=False))
    print("\n".join(pipeline.verdicts()))
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    """Score responses to a prompt with a trained reward model: one reward per --response, in order."""
    from lab.rewards import load_reward_model, score
    from lab.store import Store

    messages = build_messages(args.prompt, args.system)  # an empty prompt is refused before anything loads
    to_stderr = lambda message: print(message, file=sys.stderr)  # noqa: E731  (stdout carries only the rewards)
    lm = load_reward_model(Store(args.workspace), args.reward, args.precision, args.device, progress=to_stderr)
    rewards = score(lm, [(messages, response) for response in args.response], args.batch_size)
    for reward, response in zip(rewards, args.response, strict=True):
        print(f"{reward:+.4f}\t{response}")
    return 0


def cmd_scenario(args: argparse.Namespace) -> int:
    """Start a workshop scenario: a fresh workspace (or --workspace if empty, or --mix) seeded with its prompts,
    held-out questions, starter demonstrations and comparisons; prints where, what, and how to open it.
    --regenerate-candidates makes its shipped Ranking candidates again instead (assets/candidates/)."""
    from lab import scenarios

    if args.regenerate_candidates:
        path = scenarios.regenerate_candidates(args.name, progress=lambda m: print(m, file=sys.stderr))
        print(f"Wrote {path}")
        return 0
    store, counts = scenarios.open_scenario(args.name, args.workspace, args.truthfulqa, args.mix, Path(args.root))
    print(f"Workspace: {store.root}")
    print(scenarios.describe(args.name, counts))
    print(f"Open it: python -m ui --workspace {store.root}")
    return 0


@contextmanager
def _tee(path: Path):
    """Copy what the terminal shows into the run's log.txt."""

    class Tee:
        def __init__(self, stream, log):
            self.stream, self.log = stream, log

        def write(self, text):
            self.log.write(text)
            return self.stream.write(text)

        def flush(self):
            self.log.flush()
            self.stream.flush()

        def __getattr__(self, name):
            return getattr(self.stream, name)

    with path.open("a", encoding="utf-8") as log:
        out, err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = Tee(out, log), Tee(err, log)
        try:
            yield
        finally:
            sys.stdout, sys.stderr = out, err


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab", description="Alignment Lab, headless.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    models = sub.add_parser("models", help=cmd_models.__doc__, description=cmd_models.__doc__)
    models.set_defaults(func=cmd_models)

    gen = sub.add_parser("generate", help=cmd_generate.__doc__, description=cmd_generate.__doc__)
    gen.add_argument("--prompt", required=True, help="the user message")
    gen.add_argument("--system", default=None, help="an optional system prompt")
    gen.add_argument("--model", default=DEFAULT_MODEL, help=f"model reference (default: {DEFAULT_MODEL})")
    gen.add_argument("--adapter", default=None, help="a LoRA adapter folder to apply")
    gen.add_argument("--precision", default="fp32", choices=PRECISIONS)
    gen.add_argument("--device", default="auto", choices=DEVICES)
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--max-new-tokens", type=int, default=256)
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--stop", action="append", help="stop string (repeatable)")
    gen.set_defaults(func=cmd_generate)

    workspace = argparse.ArgumentParser(add_help=False)
    workspace.add_argument("--workspace", default=None, help="workspace folder (default $LAB_WORKSPACE or ./workspace)")

    train = sub.add_parser("train", help=cmd_train.__doc__, description=cmd_train.__doc__)
    methods = train.add_subparsers(dest="method", required=True, metavar="METHOD")
    for method in training_methods().values():
        _method_parser(methods, method, parents=[workspace])

    run = sub.add_parser("run", help=cmd_run.__doc__, description=cmd_run.__doc__, parents=[workspace])
    run.add_argument("run_id")
    run.set_defaults(func=cmd_run)

    imp = sub.add_parser("import", help=cmd_import.__doc__, description=cmd_import.__doc__, parents=[workspace])
    imp.add_argument("file")
    imp.add_argument("--format", choices=FORMATS, default=None, help="read the file as this shape (default: detected)")
    imp.add_argument(
        "--good-as-demonstrations",
        action="store_true",
        help="for completions labelled good or bad: import only the good ones, as demonstrations",
    )
    imp.set_defaults(func=cmd_import)

    exp = sub.add_parser("export", help=cmd_export.__doc__, description=cmd_export.__doc__, parents=[workspace])
    exp.add_argument("what", choices=["demonstrations", "preferences", *KINDS])
    exp.add_argument("run", nargs="?", metavar="RUN", help="adapter, merged, gguf: the run's id")
    exp.add_argument("--out", required=True, help="the JSONL file to write; for a run, the folder to write")
    exp.add_argument("--dtype", choices=GGUF_DTYPES, default="f16", help="gguf: the weights' type")
    exp.add_argument("--overwrite", action="store_true", help="replace a previous export in the --out folder")
    exp.add_argument("--origin", action="append", help="demonstrations: only these origins (human, teacher, ...)")
    exp.add_argument("--exclude", action="append", metavar="ANNOTATOR", help="preferences: leave out this annotator")
    exp.add_argument(
        "--unpaired",
        "--negatives",
        dest="negatives",
        action="store_true",
        help="preferences: export the unpaired ratings and both-bad answers (TRL's unpaired format, for KTO) instead",
    )
    exp.set_defaults(func=cmd_export)

    ev = sub.add_parser("eval", help=cmd_eval.__doc__, description=cmd_eval.__doc__, parents=[workspace])
    ev.add_argument("--prompts", default="", help="a file of prompts (TRL's prompt-only rows; default: the pool)")
    ev.add_argument("--scenario", default="", help="answer this scenario's questions instead")
    ev.add_argument(
        "--experiment", type=int, default=None, help="pit this prompt experiment's best prompt against the models"
    )
    ev.add_argument("--preset", default="cpu-default", help="a model preset from presets/models/ (the base)")
    ev.add_argument("--name", default=None, help="a name for the run")
    ev.add_argument("--out", default="", help="also write the report to this JSON file")
    ev.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)")
    _config_flags(ev, get_method("eval"))
    ev.set_defaults(func=cmd_eval)

    pipe = sub.add_parser("pipeline", help=cmd_pipeline.__doc__, description=cmd_pipeline.__doc__, parents=[workspace])
    pipe.add_argument("--scenario", required=True, help="the scenario whose data the recipe trains on")
    pipe.add_argument("--method", choices=("dpo", "rloo"), default="dpo", help="how the policy is tuned after SFT")
    pipe.add_argument("--resume", action="store_true", help="continue the last pipeline of the scenario instead")
    pipe.add_argument("--preset", default="cpu-default", help="a model preset from presets/models/")
    pipe.add_argument("--model", default="", help="the base model (default: the preset's)")
    pipe.add_argument("--steps", type=int, default=0, help="optimizer steps of every training step (default: tuned)")
    pipe.add_argument("--truthfulqa", default="", help="the TruthfulQA CSV the TruthfulQA scenario is built from")
    pipe.add_argument("--system", default="", help="a system prompt: the evaluation also asks the base with it")
    pipe.add_argument(
        "--set", action="append", metavar="STEP.KEY=VALUE", help="override one step's config, e.g. sft.max_steps=20"
    )
    pipe.set_defaults(func=cmd_pipeline)

    sc = sub.add_parser("score", help=cmd_score.__doc__, description=cmd_score.__doc__, parents=[workspace])
    sc.add_argument("--reward", required=True, metavar="RUN", help="the reward run's id")
    sc.add_argument("--prompt", required=True, help="the user message the responses answer")
    sc.add_argument("--system", default=None, help="an optional system prompt")
    sc.add_argument("--response", action="append", required=True, help="a response to score (repeatable)")
    sc.add_argument("--precision", default=None, choices=PRECISIONS, help="default: the precision the run trained in")
    sc.add_argument("--device", default="auto", choices=DEVICES)
    sc.add_argument("--batch-size", type=int, default=8, help="responses scored at once")
    sc.set_defaults(func=cmd_score)

    scn = sub.add_parser("scenario", help=cmd_scenario.__doc__, description=cmd_scenario.__doc__)
    scn.add_argument("name", metavar="NAME", help="a scenario: its file name (truthfulness, …) or its display name")
    scn.add_argument("--workspace", default=None, help="seed this folder (it must be empty, unless --mix)")
    scn.add_argument("--root", default="workspaces", help="where fresh workspaces go (default: workspaces/)")
    scn.add_argument("--mix", action="store_true", help="add the scenario to a --workspace that already holds work")
    scn.add_argument("--truthfulqa", default=None, metavar="CSV", help="TruthfulQA's CSV (its scenario needs it)")
    scn.add_argument(
        "--regenerate-candidates", action="store_true", help="make the scenario's shipped Ranking candidates again"
    )
    scn.set_defaults(func=cmd_scenario)
    return parser


def _method_parser(methods: argparse._SubParsersAction, method, parents: list) -> None:
    """`train METHOD`: the common options, then one flag per config field, with the field's help and range."""
    parser = methods.add_parser(
        method.name, help=method.summary, description=f"{method.summary} Trains on {method.data}.", parents=parents
    )
    parser.add_argument("--preset", default="cpu-default", help="a model preset from presets/models/")
    parser.add_argument("--config", default=None, help="a config.yaml (a run's, to reproduce it); flags override it")
    parser.add_argument(
        "--data",
        default=None,
        help=f"a training file, or '{WORKSPACE_DATA}' (the default): the workspace's {method.data}",
    )
    parser.add_argument("--name", default=None, help="a name for the run")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)")
    parser.add_argument(
        "--prepare-only",
        action="store_true",
        help="freeze the data and config into a queued run, print its id, stop (then: accelerate launch -m lab run ID)",
    )
    if method.data == "demonstrations":
        parser.add_argument("--origin", action="append", help="train only on demonstrations of this origin")
    if method.data == "preferences":
        parser.add_argument("--exclude", action="append", metavar="ANNOTATOR", help="leave out this annotator's votes")
        parser.add_argument(
            "--exclude-flagged", action="store_true", help="leave out the annotators the Arena flags as careless"
        )
        parser.add_argument("--scenario", help="train only on the votes cast in this scenario's queue")
    if method.data == "prompts":
        parser.add_argument("--scenario", help="sample from this scenario's questions (default: the prompt pool)")
    _config_flags(parser, method)
    parser.set_defaults(func=cmd_train)


def _config_flags(parser: argparse.ArgumentParser, method) -> None:
    """One flag per field of the method's config (but its data file), with the field's help, range and default."""
    from lab.fields import describe_range, yaml_scalar
    from lab.train.config import group_of

    groups: dict[str, argparse._ArgumentGroup] = {}
    for spec in dataclasses.fields(method.config):
        if spec.name == "data":
            continue  # the --data file above
        group = group_of(method.config, spec.name)
        if group not in groups:
            groups[group] = parser.add_argument_group(f"{method.name} config: {group}")
        bounds = describe_range(spec)
        groups[group].add_argument(
            f"--{spec.name.replace('_', '-')}",
            dest=f"field_{spec.name}",
            type=yaml_scalar,
            default=argparse.SUPPRESS,
            metavar=type(spec.default).__name__.upper(),
            help=f"{spec.metadata['help']}{f' ({bounds})' if bounds else ''} Default: {spec.default!r}.",
        )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (ModelError, PromptTooLongError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyError as err:  # an unknown id: the message is the key error's text
        print(f"error: {err.args[0]}", file=sys.stderr)
        return 2
    except OSError as err:  # a file or folder the user named
        print(f"error: {err.strerror or err}: {err.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
