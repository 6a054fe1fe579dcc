"""`ltsft`: run any pipeline stage by hand. Every stage reads params.yaml (see --help)."""

from __future__ import annotations

import enum
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

# Light imports only: `ltsft --help` must not load torch or transformers (each command
# imports what it runs). The registry below is torch-free by design.
from pipeline.core.errors import LtsftError
from pipeline.methods import METHODS, language_methods, task_methods

app = typer.Typer(
    help=__doc__ + "\n\nThe usual order: download → prepare-model → (MAD-G: mad-g-text → train-generator) → "
    "train-lang LANG (each language and method) → train-task TASK (each method) → evaluate TASK (each method) → "
    "report. `dvc repro` runs exactly these (see dvc.yaml).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
diff_app = typer.Typer(help="Inspect, apply, compose, export and share sparse diff directories.", no_args_is_help=True)
app.add_typer(diff_app, name="diff")
adapter_app = typer.Typer(help="Released MAD-X adapters (the `adapters` library's files).", no_args_is_help=True)
app.add_typer(adapter_app, name="adapter")
slurm_app = typer.Typer(help="Run the pipeline on a SLURM cluster: one sbatch job per stage.", no_args_is_help=True)
app.add_typer(slurm_app, name="slurm")

ParamsOption = Annotated[Path, typer.Option("--params", help="Parameter file to read.")]


def _value(choice: Any) -> str:
    return choice.value if isinstance(choice, enum.Enum) else str(choice)


def one_line_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Bad input (params, files, diffs) ends in one line on stderr and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except LtsftError as err:
            typer.secho(f"error: {err}", err=True, fg=typer.colors.RED)
            raise typer.Exit(2) from None

    return wrapper


def _prepare(params_path: Path):
    from stages.common import quiet_transformers
    from pipeline.core.config import load_params
    from pipeline.core.distributed import check_batch_sizes
    from pipeline.core.runtime import configure

    params = load_params(params_path)  # bad params fail before transformers is even imported
    check_batch_sizes(params.raw)  # launched data-parallel: every batch must split evenly
    configure(params.runtime)  # a precision this machine cannot run fails here, before any work
    quiet_transformers()
    return params


def _choices(name: str, methods: list[str]) -> type[enum.Enum]:
    """The registry's methods as a typer choice (so `--help` lists them)."""
    return enum.Enum(name, [(method, method) for method in methods], type=str)


def _described(methods: list[str]) -> str:
    return "; ".join(f"{name}: {METHODS[name].summary}" for name in methods)


LangMethod = _choices("LangMethod", language_methods())
TaskMethod = _choices("TaskMethod", task_methods())
EvalMethod = _choices("EvalMethod", list(METHODS))


@app.command()
@one_line_errors
def preset(name: Annotated[str, typer.Argument(help="Preset name: a file presets/NAME.yaml (smoke, demo, paper).")]) -> None:
    """Write presets/NAME.yaml over params.yaml."""
    from stages import preset as stage

    stage.run(name)


@app.command()
@one_line_errors
def download(params: ParamsOption = Path("params.yaml")) -> None:
    """Fetch corpora and benchmarks into data/ (source: data.source in params)."""
    from stages import download as stage

    stage.run(_prepare(params))


@app.command("prepare-model")
@one_line_errors
def prepare_model(params: ParamsOption = Path("params.yaml")) -> None:
    """Write the pretrained encoder θ0 with its MLM head to models/base."""
    from stages import prepare_model as stage

    stage.run(_prepare(params))


@app.command("train-lang")
@one_line_errors
def train_lang(
    lang: Annotated[str, typer.Argument(help="Language code, a key under `languages:` in params.")],
    method: Annotated[LangMethod, typer.Option("--method", help=f"What to train. {_described(language_methods())}.")] = "lt-sft",
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Train LANG's language component by masked LM on its raw text.

    Writes diffs/METHOD/lang/LANG (adapters/madx/lang/LANG for madx); lt-sft also keeps its
    dense phase 1 as diffs/dense-composed/lang/LANG.
    """
    from stages import train_lang as stage

    stage.run(_prepare(params), lang, _value(method))


@app.command("train-task")
@one_line_errors
def train_task(
    task: Annotated[str, typer.Argument(help="Task name, a key under `tasks:` in params (e.g. pos).")],
    method: Annotated[TaskMethod, typer.Option("--method", help=f"What to train. {_described(task_methods())}.")] = "lt-sft",
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Train TASK's component on its source language (over the source language's component).

    Writes diffs/METHOD/task/TASK (madx: adapters/madx/task/TASK).
    """
    from stages import train_task as stage

    stage.run(_prepare(params), task, _value(method))


@app.command("mad-g-text")
@one_line_errors
def mad_g_text(params: ParamsOption = Path("params.yaml")) -> None:
    """Collect MAD-G's generator training text into corpora/mad-g (many languages, no task target)."""
    from stages import mad_g as stage

    stage.collect_text(_prepare(params))


@app.command("train-generator")
@one_line_errors
def train_generator(params: ParamsOption = Path("params.yaml")) -> None:
    """Train MAD-G's generator on corpora/mad-g; write it and every language's generated adapter.

    Writes adapters/mad-g/generator/uriel and adapters/mad-g/lang/LANG for each key under `languages:`.
    """
    from stages import mad_g as stage

    stage.train(_prepare(params))


@app.command()
@one_line_errors
def evaluate(
    task: Annotated[str, typer.Argument(help="Task name, a key under `tasks:` in params.")],
    method: Annotated[EvalMethod, typer.Option("--method", help="Trained method to score.")] = "lt-sft",
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Compose METHOD's components onto θ0 and score zero-shot on every target of TASK.

    Writes results/TASK/METHOD.json with every variant the method reports (lt-sft also
    scores lt-sft-task-only; madx also madx-task-only).
    """
    from stages import evaluate as stage

    stage.run(_prepare(params), task, _value(method))


@app.command()
@one_line_errors
def ablate(
    task: Annotated[str, typer.Argument(help="Task to sweep (params: ablation.task).")],
    k: Annotated[int, typer.Option("--k", help="The task diff's K for this point of the sweep.")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """One point of the sparsity sweep: LT-SFT and Rand-SFT task diffs at K, scored on every target.

    Reuses the main run's LT-SFT phase 1 and language diffs; writes results/TASK/sparsity/kK.json.
    """
    from stages import ablate as stage

    stage.run(_prepare(params), task, k)


@app.command("ablate-l1")
@one_line_errors
def ablate_l1(
    task: Annotated[str, typer.Argument(help="Task whose targets' language diffs to retrain (params: ablation.task).")],
    l1: Annotated[float, typer.Option("--l1", min=0.0, help="The language diffs' L1 weight λ for this point.")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """One point of the L1 ablation: the targets' LT-SFT language diffs retrained at λ, composed with
    the main run's task diff and scored (results/TASK/l1/l1_λ.json; the diffs are not kept)."""
    from stages import ablate as stage

    stage.run_l1(_prepare(params), task, l1)


@app.command()
@one_line_errors
def overlap(
    task: Annotated[str, typer.Argument(help="Task whose LT-SFT diff to compare with each target's language diff.")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Per-layer overlap of the task diff with each target language diff (results/TASK/overlap.json)."""
    from stages import overlap as stage

    stage.run(_prepare(params), task)


@app.command()
@one_line_errors
def report(params: ParamsOption = Path("params.yaml")) -> None:
    """Render reports/index.html and reports/metrics.json from results/."""
    from stages import report as stage

    stage.run(_prepare(params))


@diff_app.command("info")
@one_line_errors
def diff_info(
    path: Annotated[Path, typer.Argument(help="A diff directory (diff.json + diff.safetensors).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Entries, K, density, base fingerprint and storage cost of a diff."""
    from stages.diff_info import info

    facts = info(path)
    if as_json:
        json.dump(facts, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for key, value in facts.items():
            typer.echo(f"{key:>24}  {value}")


@diff_app.command("import")
@one_line_errors
def diff_import(
    path: Annotated[Path, typer.Argument(help="A released pytorch_diff.bin (the paper authors' format), or a "
                                              "directory holding one.")],
    out: Annotated[Path, typer.Argument(help="Directory to write the diff to (diff.json + diff.safetensors).")],
    base_model: Annotated[str, typer.Option(help="Base model name to record, e.g. bert-base-multilingual-cased.")] = "",
) -> None:
    """Convert a published LT-SFT diff into our format, without running code from the file.

    The file is read with torch's weights-only unpickler (only numpy scalar globals allowed,
    under numpy 1's and numpy 2's names: every released file was pickled under numpy 1);
    column-major delta-coded indices become our row-major Elias-Fano-coded ones.
    """
    from pipeline.sources.published import import_published

    diff = import_published(path, out, base_model)
    typer.echo(f"{out}: {diff.nnz:,} entries in {len(diff.indices)} tensors, dense {sorted(diff.dense)}")


@adapter_app.command("import")
@one_line_errors
def adapter_import(
    path: Annotated[Path, typer.Argument(help="A directory as the `adapters` library saves an adapter: "
                                              "adapter_config.json + pytorch_adapter.bin or adapter.safetensors.")],
    out: Annotated[Path, typer.Argument(help="Directory to write our adapter to (adapter.json + "
                                             "madx_adapter.safetensors).")],
    reduction_factor: Annotated[int, typer.Option(help="The reduction factor the adapter must have.")] = 2,
    base_model: Annotated[str, typer.Option(help="Refuse an adapter whose config names another model_name, "
                                                 "e.g. bert-base-multilingual-cased.")] = "",
) -> None:
    """Convert a released MAD-X language adapter (AdapterHub) into our format, weights only.

    The config must be MAD-X's (Pfeiffer bottleneck after the FFN, NICE invertible adapter,
    the given reduction factor); every tensor must map onto ours, with none missing or extra.
    A .bin is read with torch's weights-only unpickler and no extra globals.
    """
    from pipeline.sources.adapterhub import import_adapter

    meta = import_adapter(path, out, reduction_factor, base_model or None)
    typer.echo(f"{out}: {meta['trainable_parameters']:,} parameters, {meta['num_layers']} layers, hidden "
               f"{meta['hidden_size']}, rf {meta['reduction_factor']}, {meta['non_linearity']}")


# --- issue 14: export ---
class ExportFormat(str, enum.Enum):
    composable_sft = "composable-sft"


@diff_app.command("apply")
@one_line_errors
def diff_apply(
    base: Annotated[str, typer.Argument(help="θ0: a model directory (e.g. models/base) or a hub name.")],
    diffs: Annotated[list[Path], typer.Argument(help="Diff directories to add, e.g. a task diff and a language diff.")],
    out: Annotated[Path, typer.Option("--out", help="Directory to write the merged model to (save_pretrained).")],
    with_head: Annotated[bool, typer.Option("--with-head", help="Also write the task head (the dense tensors) of the "
                                                                "one diff that carries one, in its task's model class.")] = False,
    task: Annotated[str | None, typer.Option(help="The head's task (pos, ner, nli, mlm), for a diff that records "
                                                  "none (an imported one).")] = None,
    head_from: Annotated[Path | None, typer.Option("--head-from", help="The diff whose head to write, when several "
                                                                       "task diffs carry one.")] = None,
) -> None:
    """Write θ0 + the sum of the diffs as a plain transformers checkpoint (safetensors + tokenizer).

    With --with-head the model is the task's (labels in its config), composed as the evaluation
    composes it, so `AutoModelFor<Task>.from_pretrained(OUT)` gives the logits that were scored.
    The dependency parser's head is no transformers class: dp is refused with --with-head.
    Without it, the diffs go onto BASE in its own architecture (an adapted encoder).
    """
    from pipeline.core.merged import write_merged

    facts = write_merged(base, diffs, out, with_head, task, head_from)
    labels = f", labels {' '.join(facts['labels'])}" if facts["labels"] else ""
    typer.echo(f"{out}: {facts['architecture']}, θ0 + {len(diffs)} diff(s), {facts['entries']:,} entries{labels}")


@diff_app.command("compose")
@one_line_errors
def diff_compose(
    diffs: Annotated[list[Path], typer.Argument(help="Two or more diff directories over the same θ0.")],
    out: Annotated[Path, typer.Option("--out", help="Directory to write the sum to.")],
    head_from: Annotated[Path | None, typer.Option("--head-from", help="Keep only this diff's dense tensors (heads); "
                                                                       "needed when two diffs carry the same one.")] = None,
) -> None:
    """Sum diffs into one: the union of their entries, values added; K the sum; provenance lists the parts."""
    from pipeline.core.diff_sum import compose_diffs

    total = compose_diffs(diffs, out, head_from)
    typer.echo(f"{out}: {total.nnz:,} entries in {len(total.indices)} tensors, K {total.k}, dense {sorted(total.dense)}")


@diff_app.command("export")
@one_line_errors
def diff_export(
    path: Annotated[Path, typer.Argument(help="A diff directory (diff.json + diff.safetensors).")],
    out: Annotated[Path, typer.Argument(help="Directory to write pytorch_diff.bin to.")],
    fmt: Annotated[ExportFormat, typer.Option("--format", help="composable-sft: the reference implementation's "
                                                                   "file, which its SFT(OUT).apply(model) reads.")],
) -> None:
    """Write a diff in another implementation's format (composable-sft: pytorch_diff.bin).

    Column-major delta-coded indices, dense tensors under "abs", only ints, torch.Size and
    tensors (torch's default weights-only loader reads it). `ltsft diff import OUT` reads it back.
    """
    from pipeline.formats import composable_sft
    from pipeline.formats.sparse_diff import SparseDiff

    if not path.exists():
        raise LtsftError(f"{path}: no such diff directory")
    diff = SparseDiff.load(path)
    composable_sft.write(diff, out)
    typer.echo(f"{out / composable_sft.FILE}: {diff.nnz:,} entries in {len(diff.indices)} tensors "
               f"({len(diff.shapes)} listed), abs {sorted(diff.dense)}")


# --- issue 14: hub ---
RepoArgument = Annotated[str, typer.Argument(help="Hub model repo to create or update, owner/name.")]
PrivateOption = Annotated[bool, typer.Option("--private", help="Create the repo private (an existing repo keeps "
                                                              "its visibility).")]
LocalDirOption = Annotated[Path | None, typer.Option("--local-dir", help="Write exactly the folder that would be "
                                                     "uploaded (files + README.md card) here; no network.")]
DatasetOption = Annotated[list[str] | None, typer.Option("--dataset", help="A Hub dataset id the component was trained "
                                                         "on, for the card's metadata (repeatable).")]
BaseModelOption = Annotated[str | None, typer.Option("--base-model", help="The card's base_model (a Hub model id), "
                                                     "when the component's own record is no Hub id.")]


def _push(kind: str, path: Path, repo_id: str, private: bool, local_dir: Path | None, dataset: list[str] | None,
          base_model: str | None) -> None:
    from stages.hub_push import push

    typer.echo(push(path, kind, repo_id, private, local_dir, tuple(dataset or ()), base_model))


@diff_app.command("push")
@one_line_errors
def diff_push(
    path: Annotated[Path, typer.Argument(help="A diff directory (diff.json + diff.safetensors).")],
    repo_id: RepoArgument,
    private: PrivateOption = False,
    local_dir: LocalDirOption = None,
    dataset: DatasetOption = None,
    base_model: BaseModelOption = None,
) -> None:
    """Upload a diff to the Hugging Face Hub with a model card (README.md): what it is, K and density,
    the training budget, dev metrics before and after, the command that made it, how to load it.

    The card's facts come from diff.json, the run log (runs/) and, when it is the run's own, params.yaml;
    what they do not record the card calls unknown. Load it back: SparseDiff.from_pretrained(REPO_ID).
    """
    _push("diff", path, repo_id, private, local_dir, dataset, base_model)


@adapter_app.command("push")
@one_line_errors
def adapter_push(
    path: Annotated[Path, typer.Argument(help="An adapter directory (adapter.json + madx_adapter.safetensors), or a "
                                              "MAD-X task component (adapter/ + head/).")],
    repo_id: RepoArgument,
    private: PrivateOption = False,
    local_dir: LocalDirOption = None,
    dataset: DatasetOption = None,
    base_model: BaseModelOption = None,
) -> None:
    """Upload a MAD-X adapter to the Hugging Face Hub with a model card (as `ltsft diff push`).

    Load it back: pipeline.formats.adapter.load_adapter_pretrained(REPO_ID, module).
    """
    _push("adapter", path, repo_id, private, local_dir, dataset, base_model)


@app.command("import-published")
@one_line_errors
def import_published(
    kind: Annotated[str, typer.Argument(help="lang, task or adapter.")],
    name: Annotated[str, typer.Argument(help="A language code under `languages:` or a task under `tasks:`.")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Fetch and convert the authors' released diff for NAME (the lt-sft-published method),
    or with `adapter` a released MAD-X language adapter for NAME (the madx-published method).

    Reads the repo named by published.lang_repo / published.task_repos / published.adapter_repo
    in params, from the hub or from published.local_root; writes diffs/lt-sft-published/{lang,task}/NAME
    or adapters/madx-published/lang/NAME.
    """
    from stages import import_published as stage

    stage.run(_prepare(params), kind, name)


@app.command("dvc-yaml")
@one_line_errors
def dvc_yaml(
    check: Annotated[bool, typer.Option("--check", help="Only say whether dvc.yaml is current; exit 1 if not.")] = False,
) -> None:
    """Write dvc.yaml from the method registry and the file layout (run it after adding a method)."""
    from stages import dvc_yaml as stage

    current = stage.run(check=check)
    if check and not current:
        typer.echo("dvc.yaml is out of date: run `ltsft dvc-yaml`", err=True)
        raise typer.Exit(1)
    typer.echo("dvc.yaml: " + ("current" if current else "written"))


@app.command()
@one_line_errors
def bench(
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the figures to this JSON file.")] = None,
    k: Annotated[int, typer.Option(help="Entries to select (default: the paper's task K).")] = 14_155_776,
    skip_naive: Annotated[bool, typer.Option("--skip-naive", help="Skip the slow reference-style selection.")] = False,
    paper_rate: Annotated[bool, typer.Option(
        "--paper-rate", help="Only measure steps/second of a paper-scale language-SFT step (for planning).")] = False,
    throughput: Annotated[bool, typer.Option(
        help="Also time plain Trainer fine-tuning against LT-SFT's phases (tagging and masked LM).")] = True,
    only_throughput: Annotated[bool, typer.Option("--only-throughput", help="Only the throughput section.")] = False,
    geometry: Annotated[str, typer.Option(
        help="Throughput model: small (mBERT's vocabulary, 2 narrow layers, 8 x 128) or mbert (8 x 256).")] = "small",
    bf16: Annotated[bool, typer.Option("--bf16", help="Throughput in bf16 autocast (the Trainer's bf16).")] = False,
    rounds: Annotated[int, typer.Option(help="Throughput: interleaved rounds (plain, then LT-SFT, or reversed).")] = 4,
    timed: Annotated[int, typer.Option(help="Throughput: timed steps per phase and round (after 2 warm-up).")] = 8,
    threads: Annotated[int | None, typer.Option(
        help="torch threads for the run (default: torch's choice; 1 gives steadier ratios on a shared machine).")] = None,
    padding: Annotated[bool, typer.Option(
        "--padding", help="Only the share of padding per batch in this checkout's training data (params.yaml; "
        "needs `ltsft download` and `prepare-model`), random against length-grouped batches.")] = False,
    params: Annotated[Path, typer.Option(help="params file (for --padding).")] = Path("params.yaml"),
) -> None:
    """Benchmark selection, storage, sparse steps and training throughput on mBERT-size models."""
    from stages import bench as stage

    if padding:
        stage.run_padding(json_out, _prepare(params))
        return
    if paper_rate:
        stage.run_paper_rate(json_out)
        return
    stage.run(json_out, k=k, skip_naive=skip_naive, throughput=throughput, only_throughput=only_throughput,
              geometry=geometry, bf16=bf16, rounds=rounds, timed=timed, threads=threads)


@slurm_app.command("submit")
@one_line_errors
def slurm_submit(
    targets: Annotated[list[str] | None, typer.Argument(
        help="Stages to bring up to date, with what they need (as `dvc repro TARGETS`); default: all.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the jobs, their order and the sbatch lines; submit nothing.")] = False,
    partition: Annotated[str | None, typer.Option(help="sbatch --partition for every job.")] = None,
    gpus_per_job: Annotated[int | None, typer.Option(min=1, help="sbatch --gpus for each stage's job.")] = None,
    time: Annotated[str | None, typer.Option(help="sbatch --time for every job, e.g. 2-00:00:00.")] = None,
    cpus_per_task: Annotated[int | None, typer.Option(min=1, help="sbatch --cpus-per-task for each stage's job.")] = None,
    mem: Annotated[str | None, typer.Option(help="sbatch --mem for each stage's job, e.g. 32G.")] = None,
    account: Annotated[str | None, typer.Option(help="sbatch --account for every job.")] = None,
    sbatch_arg: Annotated[list[str] | None, typer.Option(
        "--sbatch-arg", help="Any further sbatch option for every job, e.g. --sbatch-arg=--qos=long (repeatable).")] = None,
) -> None:
    """Submit the stages `dvc repro` would run as sbatch jobs that wait for their inputs' jobs.

    Each job runs its stage's command and records the stage in dvc.lock (`dvc commit`), so that
    afterwards `dvc repro` has nothing to do; a last job checks that. Scripts and logs: .ltsft/slurm/.
    """
    from stages import slurm as stage
    from stages.slurm_plan import Resources

    resources = Resources(partition, gpus_per_job, time, cpus_per_task, mem, account, tuple(sbatch_arg or ()))
    stage.run(targets or [], resources, dry_run)


@slurm_app.command("check")
@one_line_errors
def slurm_check(stages: Annotated[list[str], typer.Argument(help="DVC stage names, e.g. train_lang_lt_sft@en.")]) -> None:
    """Exit 0 when dvc.lock records every STAGE as it is now (`dvc repro` would skip them all).

    The last job of `ltsft slurm submit` runs it; one DVC pass, however many stages.
    """
    from stages import slurm as stage

    stage.check(stages)


if __name__ == "__main__":  # `python -m stages.cli …`, e.g. under accelerate launch or torchrun
    app()
