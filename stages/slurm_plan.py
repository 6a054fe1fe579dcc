"""The stages `dvc repro` would run, as SLURM jobs: the pure part (no DVC, no sbatch, no files).

One job per stage, waiting (``--dependency=afterok:``) for the jobs of the stages whose outputs
it reads, so independent stages run at once on as many nodes as the cluster gives. A job runs
its stage's own command, not ``dvc repro``: DVC holds the repository's lock for the whole of a
``dvc repro``, so concurrent ``dvc repro --single-item`` jobs would queue behind each other.
After its command, a job records its stage with ``dvc commit`` (the lock is held for seconds),
so a failure further down keeps what finished, and so when the last stage ends, dvc.lock
records them all and ``dvc repro`` finds everything up to date. A last job, after all others,
checks that (``ltsft slurm check``): it fails, naming them, if stages changed while they ran.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.errors import LtsftError

# The last job's name. No stage can take it: a stage's own name has no dot, a foreach stage's
# has an "@", and one in another folder's dvc.yaml keeps that folder in its name.
CHECK_JOB = "dvc.check"
JOB_PREFIX = "ltsft-"


@dataclass(frozen=True)
class StageInfo:
    """What planning needs of one DVC stage (stages/slurm.py reads it from DVC)."""

    name: str  # DVC's address, e.g. train_lang_lt_sft@en
    commands: tuple[str, ...]  # its cmd (a list in dvc.yaml gives several); none for a data source
    wdir: str = "."  # where the commands run, relative to the repository root
    outs: tuple[str, ...] = ()  # outputs that DVC removes before a run (persistent ones are not)
    upstream: tuple[str, ...] = ()  # stages whose outputs it reads (direct edges of DVC's graph)


@dataclass(frozen=True)
class Job:
    name: str  # file-safe: the script is <name>.sh, the log <name>.out
    stages: tuple[str, ...]  # the stage it runs, or for the last job every planned stage
    after: tuple[str, ...]  # names of the jobs it waits for
    script: str


@dataclass(frozen=True)
class Resources:
    """What each stage's job asks of SLURM; None leaves the cluster's default."""

    partition: str | None = None
    gpus: int | None = None
    time: str | None = None
    cpus_per_task: int | None = None
    mem: str | None = None
    account: str | None = None
    extra: tuple[str, ...] = field(default_factory=tuple)  # further sbatch options, as given

    def options(self, compute: bool = True) -> list[str]:
        """sbatch options; ``compute=False`` (the last job) drops GPUs, CPUs and memory: it only hashes files."""
        pairs = [("partition", self.partition), ("account", self.account), ("time", self.time)]
        if compute:
            pairs += [("gpus", self.gpus), ("cpus-per-task", self.cpus_per_task), ("mem", self.mem)]
        return [f"--{key}={value}" for key, value in pairs if value is not None] + list(self.extra)


def to_run(stages: Sequence[StageInfo], changed: set[str]) -> list[StageInfo]:
    """The stages `dvc repro` would run, in the given (dependency-first) order: each changed
    stage and everything downstream of one. DVC decides downstream stages only once their
    inputs exist; a plan made up front must assume that a re-run input changes."""
    planned: set[str] = set()
    for stage in stages:
        if stage.name in changed or planned.intersection(stage.upstream):
            planned.add(stage.name)
    return [stage for stage in stages if stage.name in planned]


def job_name(stage: str) -> str:
    """A name safe for a file and a SLURM job: a stage in a sub-folder's dvc.yaml (sub/dvc.yaml:train)
    loses its slashes and colon."""
    return re.sub(r"[^A-Za-z0-9_.@=+-]", "_", stage)


@dataclass(frozen=True)
class Environment:
    """Where the jobs run: the same repository and Python environment as the submitter (on a
    cluster both must be on a filesystem every node mounts)."""

    root: Path  # absolute repository root
    bin_dir: Path  # holds the `ltsft` and `dvc` of this environment


def _header(env: Environment, title: str, stage: str | None = None) -> list[str]:
    variables = [f"PATH={shlex.quote(str(env.bin_dir))}:\"$PATH\"", f"DVC_ROOT={shlex.quote(str(env.root))}"]
    if stage is not None:
        variables.append(f"DVC_STAGE={shlex.quote(stage)}")  # as `dvc repro` sets them for a stage's cmd
    return [
        "#!/bin/bash",
        f"# {title}",
        "# Written by `ltsft slurm submit` (each submission writes these anew).",
        "set -eo pipefail",
        f"cd {shlex.quote(str(env.root))}",
        "export " + " ".join(variables),
    ]


def _commit(stage: str) -> str:
    # --wait-for-lock: jobs that end together queue for the repository lock instead of failing.
    return f"dvc --wait-for-lock commit --force --quiet {shlex.quote(stage)}"


def stage_script(stage: StageInfo, env: Environment) -> str:
    lines = _header(env, f"SLURM job for DVC stage {stage.name}", stage.name)
    if stage.outs:
        lines += ["# dvc repro removes a stage's outputs before running it: no stale file may be committed.",
                  "rm -rf -- " + " ".join(shlex.quote(out) for out in stage.outs)]
    run = list(stage.commands)
    if stage.wdir not in ("", "."):
        run = [f"cd {shlex.quote(stage.wdir)}", *run, f"cd {shlex.quote(str(env.root))}"]
    lines += run
    lines += ["# Record the stage in dvc.lock now, so that a later failure keeps it.", _commit(stage.name)]
    return "\n".join(lines) + "\n"


def check_script(stages: Sequence[str], env: Environment) -> str:
    lines = _header(env, "SLURM job after all stage jobs: each recorded its stage; check that none changed since")
    lines += ["ltsft slurm check " + " ".join(shlex.quote(name) for name in stages)]
    return "\n".join(lines) + "\n"


def plan(stages: Sequence[StageInfo], changed: set[str], env: Environment) -> list[Job]:
    """The jobs, in submission order (every job after those it waits for); [] when nothing is to do."""
    runnable = [stage for stage in to_run(stages, changed) if stage.commands]
    if not runnable:
        return []
    names = {stage.name: job_name(stage.name) for stage in runnable}
    clashes = {name for name in names.values() if list(names.values()).count(name) > 1}
    if clashes:
        taken = sorted(stage for stage, name in names.items() if name in clashes)
        raise LtsftError(f"stages {', '.join(taken)}: their SLURM job names clash; rename one in dvc.yaml")
    jobs = [
        Job(names[stage.name], (stage.name,), tuple(names[up] for up in stage.upstream if up in names),
            stage_script(stage, env))
        for stage in runnable
    ]
    everything = tuple(stage.name for stage in runnable)
    jobs.append(Job(CHECK_JOB, everything, tuple(job.name for job in jobs), check_script(everything, env)))
    return jobs


def sbatch_arguments(job: Job, folder: Path, resources: Resources, after_ids: Sequence[str], root: Path) -> list[str]:
    """sbatch's arguments for a job (without `sbatch` itself); ``after_ids``: the job ids it waits for."""
    arguments = [
        f"--job-name={JOB_PREFIX}{job.name}",
        f"--output={folder / (job.name + '.out')}",
        f"--chdir={root}",
    ]
    if after_ids:
        # A failed stage cancels everything downstream instead of leaving it pending for ever.
        arguments += [f"--dependency=afterok:{':'.join(after_ids)}", "--kill-on-invalid-dep=yes"]
    arguments += resources.options(compute=job.name != CHECK_JOB)
    return arguments + [str(folder / (job.name + ".sh"))]
