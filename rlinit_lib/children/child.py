"""Child training, declared once: the fields every scale-search notebook shares (data, optimiser,
activation, device), and the function a trial calls to train one child network.

Source: the dissertation's proxy (Sec. 4.2.1): SimpleCNN, Adam lr 1e-3, batch 128, CIFAR-10. The
settings travel to a trial as a plain dict (``ChildTraining.child()``), so a trial can run in another
process; each process loads a dataset once (``core.data.load_cached``).

``precision`` (fp32 | bf16 | auto) is resolved once, in the process that opens the run store
(``core.precision``: ``auto`` probes a few SimpleCNN steps at the run's batch size and thread count), and
the trials receive the chosen value. The chosen precision is part of the run's identity, and the probe's
numbers are part of its environment record.
"""
from __future__ import annotations

from dataclasses import dataclass

from rlinit_lib.core.data import DATASET_CHANNELS, DataFields, load_cached
from rlinit_lib.core.params import Choice, Float, Int, param
from rlinit_lib.core.precision import PRECISIONS, resolve_precision
from rlinit_lib.core.runtime import device_rule, environment_info, pick_device
from rlinit_lib.core.store import stored_identity
from rlinit_lib.core.trials import torch_threads, trial_threads
from rlinit_lib.initialisation.activations import ACTIVATIONS
from rlinit_lib.children.training import TrainResult, probe_step, train_and_evaluate

NAN_REWARD = -2.0
MAX_REWARD = 10.0


def reward_of(result: TrainResult, split: str = "val") -> float:
    """The dissertation's reward (Sec. 3.4): ``10 * accuracy``, or -2 when training hit NaN/inf. The
    accuracy is on the validation split (``split="test"``: the dissertation's own protocol, which chose on
    the test set)."""
    acc = result.val_accuracy if split == "val" else result.test_accuracy
    return NAN_REWARD if result.nan_detected else MAX_REWARD * float(acc)


@dataclass
class ChildTraining(DataFields):
    """The child network's data (``core.data.DataFields``) and training (Sec. 4.2.1)."""

    batch_size: int = param(128, Int(low=1, high=65_536))
    lr: float = param(1e-3, Float(low=0.0, low_open=True))     # Adam learning rate of the child
    activation: str = param("silu", Choice(tuple(ACTIVATIONS)))  # silu | relu | gelu | tanh
    device: str = param("auto", device_rule, identity=False)   # auto | cpu | cuda | mps
    precision: str = param("auto", Choice(PRECISIONS))         # fp32 | bf16 | auto (bf16 where measured faster)

    def precision_record(self) -> dict:
        """``{"requested", "chosen", "probe"}``: ``auto`` keeps the precision of an existing store in
        ``output_dir``, else probes this process's device at the batch size and thread count the trials use
        (cached for the process)."""
        device = pick_device(self.device)
        with torch_threads(trial_threads(getattr(self, "trial_cpus", 1.0))):
            return resolve_precision(self.precision, ("SimpleCNN", self.dataset, self.batch_size, self.activation),
                                     probe_step(DATASET_CHANNELS[self.dataset], self.batch_size, self.activation,
                                                device), device,
                                     stored=self.stored_precision())

    def stored_precision(self) -> str | None:
        out = getattr(self, "output_dir", None)
        return stored_identity(out).get("precision") if out else None

    def identity(self) -> dict:
        return {**super().identity(), "precision": self.precision_record()["chosen"]}

    def environment(self) -> dict:
        """The environment record of a child-training run, with the precision and its probe."""
        return {**environment_info(pick_device(self.device)), "precision": self.precision_record()}

    def child(self) -> dict:
        """The settings a child-training trial needs, as plain values (``precision``: the chosen one)."""
        return {**{k: getattr(self, k) for k in ("dataset", "data_root", "train_subset", "test_subset", "val_size", "batch_size",
                                                 "lr", "activation", "device")},
                "precision": self.precision_record()["chosen"]}


def train_child(child: dict, scale: float, epochs: int, seed: int, eval_every_epoch: bool = False) -> TrainResult:
    """Train one SimpleCNN at He scale ``scale`` for ``epochs`` with ``seed`` (the proxy of Sec. 4.2.1)."""
    device = str(pick_device(child["device"]))
    data = load_cached(child["dataset"], child["data_root"], child["train_subset"], child["test_subset"], device,
                       child["val_size"])
    return train_and_evaluate(scale, epochs, data, batch_size=child["batch_size"], lr=child["lr"],
                              activation=child["activation"], seed=seed, device=device,
                              precision=child.get("precision", "fp32"), eval_every_epoch=eval_every_epoch)


def result_row(result: TrainResult, reward_split: str = "val") -> dict:
    """The per-child summary every table of the scale-search notebooks keeps (``reward`` on the
    validation split unless ``reward_split="test"``; ``accuracy`` is always the test accuracy)."""
    nan = float("nan")
    return {"reward": reward_of(result, reward_split), "val_accuracy": result.val_accuracy, "accuracy": result.test_accuracy,
            "nan_detected": bool(result.nan_detected), "seconds": result.seconds,
            "final_train_loss": result.train_loss[-1] if result.train_loss else nan,
            "final_train_accuracy": result.train_accuracy[-1] if result.train_accuracy else nan}
