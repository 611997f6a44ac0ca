"""Checkpoints that survive interruptions: atomic writes and resuming from the newest one."""

from __future__ import annotations

import glob
import logging
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers.checkpoint import BaseSaveHandler
from monai.handlers import CheckpointLoader, CheckpointSaver

from common.bundle import as_bool, verify_weights
from common.engines.handlers import SeedEachEpoch
from common.networks.weights import read_checkpoint

__all__ = ["AtomicCheckpointSaver", "CheckedCheckpointLoader", "ResumeFromCheckpoint", "latest_checkpoint"]

logger = logging.getLogger(__name__)

# interval checkpoints only: "checkpoint_final_iteration=N.pt" (save_final) counts iterations, not epochs
_EPOCH = re.compile(r"(?:^|_)(?<!final_)(?:epoch|iteration)=(\d+)\.pt$")


class _AtomicDiskSaver(BaseSaveHandler):
    """Save a checkpoint to a temporary file in the same folder, then rename it: a kill never leaves half a file."""

    def __init__(self, dirname: str, filename: str | None = None) -> None:
        self.dirname = dirname
        self.filename = filename
        os.makedirs(dirname, exist_ok=True)

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        path = os.path.join(self.dirname, self.filename or filename)
        fd, tmp = tempfile.mkstemp(dir=self.dirname, prefix=".tmp-", suffix=".pt")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise

    def remove(self, filename: str) -> None:
        if self.filename:
            return  # the next save replaces the fixed-name file by a rename; deleting it first could lose it
        path = os.path.join(self.dirname, filename)
        if os.path.exists(path):
            os.remove(path)


class EngineProgress:
    """An engine's progress (epoch, iteration, lengths) as a checkpointable object, without its user state.

    MONAI's ``AdversarialTrainer`` lists its networks, optimisers and losses as ignite "user state", so its own
    ``state_dict`` would pickle whole modules into the checkpoint, which ``torch.load(weights_only=True)`` refuses.
    The networks and optimisers are saved by their own keys; this keeps just where training stood.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def state_dict(self) -> dict[str, Any]:
        user_keys = set(self.engine.state_dict_user_keys)
        return {k: v for k, v in self.engine.state_dict().items() if k not in user_keys}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        current = {k: getattr(self.engine.state, k) for k in self.engine.state_dict_user_keys}
        self.engine.load_state_dict({**current, **state_dict})


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` writing every file atomically (MONAI's own saver writes in place).

    Args:
        save_dir: folder of the checkpoints.
        engine_key: also save the state (epoch, iteration) of the engine this handler is attached to under this key,
            so training can resume; a config cannot reference the trainer from its own handler list.
        args, kwargs: the arguments of ``monai.handlers.CheckpointSaver``.
    """

    def __init__(self, save_dir: str, *args: Any, engine_key: str | None = None, **kwargs: Any) -> None:
        super().__init__(save_dir, *args, **kwargs)
        self.engine_key = engine_key
        if self._final_checkpoint is not None:
            self._final_checkpoint.save_handler = _AtomicDiskSaver(save_dir, self._final_filename)
        if self._key_metric_checkpoint is not None:
            self._key_metric_checkpoint.save_handler = _AtomicDiskSaver(save_dir, kwargs.get("key_metric_filename"))
        if self._interval_checkpoint is not None:
            self._interval_checkpoint.save_handler = _AtomicDiskSaver(save_dir)

    def attach(self, engine: Engine) -> None:
        if self.engine_key:
            self.save_dict[self.engine_key] = EngineProgress(engine)  # the Checkpoint objects share this dict
        super().attach(engine)

    def state_dict(self) -> dict[str, Any]:
        """The best key metric so far and its file, so that a resumed run keeps the best model instead of replacing
        it at its first validation (restored by the inherited ``load_state_dict``)."""
        if self._key_metric_checkpoint is None:
            return {"_saved": []}
        return {"_saved": [(float(p), str(f)) for p, f in self._key_metric_checkpoint._saved]}


def latest_checkpoint(ckpt_dir: str, prefix: str = "checkpoint") -> str | None:
    """Return the interval checkpoint ``<prefix>_epoch=N.pt`` (or ``_iteration=N``) with the largest N, or None."""
    newest, newest_step = None, -1
    for path in glob.glob(os.path.join(glob.escape(ckpt_dir), f"{prefix}*.pt")):
        match = _EPOCH.search(os.path.basename(path))
        if match and int(match.group(1)) > newest_step:
            newest, newest_step = path, int(match.group(1))
    return newest


def _fine_tunes_in_place(engine: Engine, files: list[str]) -> bool:
    """True when a ``CheckpointLoader`` on ``engine`` starts the run from one of ``files`` (MONAI Label's training
    loads ``model.pt`` and writes its successor there: a deliberate update, not a run that loses an earlier one)."""
    targets = {os.path.realpath(f) for f in files}
    # ignite lists an engine's handlers only in this attribute (it has no public accessor); MONAI handlers are stored
    # as the handler objects themselves
    for handler, *_ in engine._event_handlers.get(Events.STARTED, []):
        path = getattr(handler, "load_path", None)
        if isinstance(handler, CheckpointLoader) and path and os.path.realpath(path) in targets:
            return True
    return False


class ResumeFromCheckpoint:
    """Decide how training starts beside earlier checkpoints: resume from the newest one, or refuse to replace them.

    Attach it to the trainer before the other handlers. With ``enabled`` it restores everything in ``load_dict``
    (model, optimizer, the best-metric record ...) and the trainer's own state with MONAI's ``CheckpointLoader``, so
    ``trainer.run()`` continues at the saved epoch. Without it, a run that would replace an earlier run's interval
    checkpoints or ``outputs`` stops before training unless ``overwrite`` is given, or the run starts from one of
    those files (fine-tuning in place, as MONAI Label's training does).

    Args:
        ckpt_dir: folder of the ``AtomicCheckpointSaver`` interval checkpoints.
        load_dict: objects to restore, keyed as in the saved checkpoint.
        enabled: resume only when True (the bundles' ``resume`` config key), so configs can always list the handler.
        engine_key: key under which the checkpoint holds the trainer's state (``AtomicCheckpointSaver.engine_key``).
        prefix: file prefix of the interval checkpoints.
        map_location: passed to ``torch.load``.
        outputs: the other files the run writes (``model.pt``, ``model_final.pt`` ...), as paths.
        overwrite: let a fresh run replace them (the bundles' ``overwrite`` config key).
        seed: when given, every epoch is seeded from ``(seed, epoch)`` (:class:`SeedEachEpoch`), so that a resumed run
            repeats what the uninterrupted run would have done.
    """

    def __init__(
        self,
        ckpt_dir: str,
        load_dict: dict,
        enabled: bool = False,
        engine_key: str = "trainer",
        prefix: str = "checkpoint",
        map_location: Any = None,
        outputs: Sequence[str] = (),
        overwrite: bool = False,
        seed: int | None = None,
    ) -> None:
        self.ckpt_dir = ckpt_dir
        self.load_dict = load_dict
        self.engine_key = engine_key
        self.enabled = as_bool(enabled, "resume")  # '--resume false' arrives as the string 'false'
        self.prefix = prefix
        self.map_location = map_location
        self.outputs = [str(o) for o in outputs]
        self.overwrite = as_bool(overwrite, "overwrite")
        self.seeder = None if seed is None else SeedEachEpoch(seed)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)
        if self.seeder is not None:
            self.seeder.attach(engine)

    def _interval_checkpoints(self) -> list[str]:
        found = glob.glob(os.path.join(glob.escape(self.ckpt_dir), f"{self.prefix}*.pt"))
        return sorted(p for p in found if _EPOCH.search(os.path.basename(p)))

    def earlier_outputs(self) -> list[str]:
        """The files of an earlier run that this run would replace."""
        return [o for o in self.outputs if os.path.isfile(o)] + self._interval_checkpoints()

    def _start_fresh(self, engine: Engine) -> None:
        earlier = self.earlier_outputs()
        if not earlier or _fine_tunes_in_place(engine, earlier):
            return
        if not self.overwrite:
            raise FileExistsError(
                f"ckpt_dir '{self.ckpt_dir}' holds an earlier run's checkpoints ({', '.join(earlier[:4])}); "
                "pass --resume true to continue that run, --overwrite true to train anew and replace them, or "
                "another --ckpt_dir."
            )
        for path in self._interval_checkpoints():  # else a later --resume would continue the earlier run
            logger.warning("overwrite: removing the earlier run's checkpoint %s", path)
            os.remove(path)

    def __call__(self, engine: Engine) -> None:
        if not self.enabled:
            self._start_fresh(engine)
            return
        path = latest_checkpoint(self.ckpt_dir, self.prefix)
        if path is None:
            raise FileNotFoundError(
                f"resume is true but no checkpoint '{self.prefix}_epoch=N.pt' was found in ckpt_dir '{self.ckpt_dir}'; "
                "train once without --resume first, or point --ckpt_dir to the folder of the interrupted run."
            )
        logger.info("resuming from %s", path)
        load_dict = {**self.load_dict, self.engine_key: EngineProgress(engine)}
        CheckpointLoader(load_path=path, load_dict=load_dict, map_location=self.map_location)(engine)


class CheckedCheckpointLoader(CheckpointLoader):
    """MONAI's ``CheckpointLoader`` that, when the run starts, names the config key to fix if the file is missing.

    The check happens at run time, not when the config is parsed, so tools that only inspect a bundle (property
    checks, MONAI Label) work before the bundle has been trained.

    Args:
        load_path: checkpoint file.
        load_dict: objects to restore, as for ``CheckpointLoader``.
        config_key: the config key a user changes to point at the right folder.
        kwargs: further ``CheckpointLoader`` arguments.
    """

    def __init__(self, load_path: str, load_dict: dict, config_key: str = "ckpt_dir", **kwargs: Any) -> None:
        super().__init__(load_path=load_path, load_dict=load_dict, **kwargs)
        self.config_key = config_key

    def __call__(self, engine: Engine) -> None:
        if not os.path.isfile(self.load_path):
            raise FileNotFoundError(
                f"checkpoint '{self.load_path}' does not exist (config key '{self.config_key}'): train the bundle "
                f"first (python -m monai.bundle run training ...) or pass --{self.config_key} <folder with model.pt>."
            )
        verify_weights(self.load_path)
        try:
            super().__call__(engine)
        except Exception as err:
            if not (isinstance(err, RuntimeError) and "state_dict" in str(err)):
                read_checkpoint(self.load_path, self.config_key)  # an unreadable file: an error that names it
                raise
            first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
            raise ValueError(
                f"checkpoint '{self.load_path}' (config key '{self.config_key}') does not fit the configured network: "
                f"{first[:300]} Do the network's size keys (widths, ensemble size, classes) match the run that wrote "
                "it? Pass the same overrides as in training."
            ) from err
