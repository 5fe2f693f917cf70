"""Experiment tracking with wandb that never stops a run.

Offline by default (no account needed; sync later with ``wandb sync <dir>``).
``mode`` is ``offline``, ``online`` or ``disabled``. If wandb is missing, cannot
start, or fails while logging, a warning is printed and the run goes on untracked.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

from rlinit_lib.core.params import WANDB_MODES, check_choice


class Tracker:
    """A thin, failure-proof wrapper around one wandb run."""

    def __init__(self, mode: str = "offline", project: str = "rlinit", name: str | None = None,
                 config: dict | None = None, directory: str | os.PathLike = "outputs",
                 group: str | None = None):
        check_choice("wandb_mode", mode, WANDB_MODES)
        self.mode = mode
        self.run = None
        if mode == "disabled":
            return
        try:
            import wandb

            os.environ.setdefault("WANDB_SILENT", "true")
            Path(directory).mkdir(parents=True, exist_ok=True)
            self.run = wandb.init(mode=mode, project=project, name=name, group=group,
                                  config=config or {}, dir=str(directory), reinit="create_new")
        except Exception as exc:  # any wandb trouble: warn and carry on
            warnings.warn(f"wandb could not start ({type(exc).__name__}: {exc}); continuing without tracking")
            self.run = None

    @property
    def run_dir(self) -> str | None:
        return None if self.run is None else self.run.dir

    def log(self, metrics: dict, step: int | None = None) -> None:
        if self.run is None:
            return
        try:
            self.run.log(metrics, step=step)
        except Exception as exc:
            warnings.warn(f"wandb logging failed ({type(exc).__name__}: {exc}); tracking switched off")
            self.run = None

    def finish(self) -> None:
        if self.run is None:
            return
        try:
            self.run.finish()
        except Exception as exc:
            warnings.warn(f"wandb finish failed ({type(exc).__name__}: {exc})")
        self.run = None

    @classmethod
    def for_run(cls, cfg, name: str) -> "Tracker":
        """The tracker of a notebook run: its config's ``wandb_mode``/``wandb_project``, files in its
        ``output_dir``, the whole config logged."""
        return cls(cfg.wandb_mode, cfg.wandb_project, name=name, config=cfg.to_dict(), directory=cfg.output_dir)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.finish()
        return False
