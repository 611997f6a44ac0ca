"""Tests of common.engines: atomic checkpoints, resuming, gradient clipping and the iteration loss."""

from __future__ import annotations

import os
import re

import pytest
import torch
from ignite.engine import Engine, Events
from ignite.metrics import Average
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.handlers import CheckpointLoader
from torch import nn

from common.engines import (
    AtomicCheckpointSaver,
    CheckedCheckpointLoader,
    ClipGradNorm,
    ProtectOutputDir,
    ResumeFromCheckpoint,
    iteration_loss,
    latest_checkpoint,
)

DATA = [0, 1, 2]  # three iterations per epoch


def _touch(folder, *names: str) -> None:
    for name in names:
        (folder / name).write_bytes(b"")


# ----------------------------------------------------------------------------------------------------------------
# latest_checkpoint


def test_latest_checkpoint_compares_numbers_not_strings(tmp_path):
    _touch(tmp_path, "checkpoint_epoch=9.pt", "checkpoint_epoch=10.pt", "checkpoint_epoch=2.pt")
    assert latest_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint_epoch=10.pt")


def test_latest_checkpoint_iteration_level(tmp_path):
    _touch(tmp_path, "checkpoint_iteration=99.pt", "checkpoint_iteration=100.pt")
    assert latest_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint_iteration=100.pt")


def test_latest_checkpoint_ignores_other_files(tmp_path):
    """Only interval checkpoints count: a stale final checkpoint counts iterations, which would always win."""
    _touch(
        tmp_path,
        "checkpoint_epoch=3.pt",
        "checkpoint_final_iteration=6.pt",
        "checkpoint_key_metric=0.9.pt",
        "model.pt",
        "checkpoint_epoch=12.pt.bak",
        ".tmp-abc.pt",
    )
    assert latest_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint_epoch=3.pt")


def test_latest_checkpoint_prefix(tmp_path):
    _touch(tmp_path, "checkpoint_epoch=5.pt", "other_epoch=7.pt")
    assert latest_checkpoint(str(tmp_path), prefix="other") == str(tmp_path / "other_epoch=7.pt")
    assert latest_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint_epoch=5.pt")


def test_latest_checkpoint_none(tmp_path):
    assert latest_checkpoint(str(tmp_path)) is None
    _touch(tmp_path, "model.pt", "checkpoint_final_iteration=3.pt")
    assert latest_checkpoint(str(tmp_path)) is None
    assert latest_checkpoint(str(tmp_path / "missing")) is None


def test_latest_checkpoint_folder_with_glob_characters(tmp_path):
    folder = tmp_path / "run[1]"
    folder.mkdir()
    _touch(folder, "checkpoint_epoch=1.pt")
    assert latest_checkpoint(str(folder)) == str(folder / "checkpoint_epoch=1.pt")


# ----------------------------------------------------------------------------------------------------------------
# AtomicCheckpointSaver and ResumeFromCheckpoint


def _setup(seed: int = 0):
    """A no-op engine whose model weight is set to the epoch number at the end of every epoch."""
    torch.manual_seed(seed)
    model = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    engine = Engine(lambda _engine, _batch: None)
    started_epochs: list[int] = []
    engine.add_event_handler(Events.EPOCH_STARTED, lambda e: started_epochs.append(e.state.epoch))

    @engine.on(Events.EPOCH_COMPLETED)
    def _mark(e: Engine) -> None:
        with torch.no_grad():
            model.weight.fill_(float(e.state.epoch))

    return engine, model, optimizer, started_epochs


def _train(ckpt_dir, max_epochs: int, n_saved: int | None = 2):
    engine, model, optimizer, _ = _setup()
    saver = AtomicCheckpointSaver(
        str(ckpt_dir),
        save_dict={"model": model, "optimizer": optimizer},
        save_interval=1,
        n_saved=n_saved,
        save_final=True,
        engine_key="trainer",
    )
    saver.attach(engine)
    engine.run(DATA, max_epochs=max_epochs)
    return engine, model


def test_saver_writes_loadable_checkpoints_with_engine_state(tmp_path):
    _train(tmp_path, max_epochs=4, n_saved=2)
    names = sorted(os.listdir(tmp_path))  # hidden files included
    assert names == ["checkpoint_epoch=3.pt", "checkpoint_epoch=4.pt", "checkpoint_final_iteration=12.pt"]
    for epoch in (3, 4):
        checkpoint = torch.load(tmp_path / f"checkpoint_epoch={epoch}.pt", weights_only=True)
        assert set(checkpoint) == {"model", "optimizer", "trainer"}
        assert checkpoint["trainer"]["iteration"] == epoch * len(DATA)
        assert checkpoint["trainer"]["max_epochs"] == 4
        assert torch.all(checkpoint["model"]["weight"] == epoch)
    final = torch.load(tmp_path / "checkpoint_final_iteration=12.pt", weights_only=True)
    assert final["trainer"]["iteration"] == 12
    assert latest_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint_epoch=4.pt")


def test_saver_without_engine_key_saves_no_engine_state(tmp_path):
    engine, model, optimizer, _ = _setup()
    AtomicCheckpointSaver(str(tmp_path), save_dict={"model": model, "optimizer": optimizer}, save_interval=1).attach(
        engine
    )
    engine.run(DATA, max_epochs=1)
    assert set(torch.load(tmp_path / "checkpoint_epoch=1.pt", weights_only=True)) == {"model", "optimizer"}


def test_saver_final_filename(tmp_path):
    engine, model, _, _ = _setup()
    saver = AtomicCheckpointSaver(
        str(tmp_path), save_dict={"model": model}, save_final=True, final_filename="model_final.pt"
    )
    saver.attach(engine)
    engine.run(DATA, max_epochs=2)
    assert os.listdir(tmp_path) == ["model_final.pt"]
    assert torch.all(torch.load(tmp_path / "model_final.pt", weights_only=True)["weight"] == 2)


def test_resume_continues_from_newest_checkpoint(tmp_path):
    _train(tmp_path, max_epochs=4)
    engine, model, optimizer, started_epochs = _setup(seed=1)
    assert not torch.all(model.weight == 4)
    weight_at_start = []
    ResumeFromCheckpoint(str(tmp_path), load_dict={"model": model, "optimizer": optimizer}, enabled=True).attach(engine)
    engine.add_event_handler(Events.EPOCH_STARTED, lambda _e: weight_at_start.append(model.weight.detach().clone()))
    engine.run(DATA, max_epochs=6)
    assert started_epochs == [5, 6]  # continued, not restarted
    assert engine.state.iteration == 6 * len(DATA)
    assert torch.all(weight_at_start[0] == 4)  # restored before the first resumed epoch


def test_resume_loads_newest_interval_checkpoint_not_a_stale_final_one(tmp_path):
    _train(tmp_path, max_epochs=2, n_saved=None)  # leaves checkpoint_final_iteration=6.pt
    # a longer run that was killed after epoch 4 (no final checkpoint of its own)
    engine, model, optimizer, _ = _setup()
    saver = AtomicCheckpointSaver(
        str(tmp_path), save_dict={"model": model, "optimizer": optimizer}, save_interval=1, engine_key="trainer"
    )
    saver.attach(engine)
    engine.run(DATA, max_epochs=4)
    engine, model, optimizer, started_epochs = _setup(seed=1)
    ResumeFromCheckpoint(str(tmp_path), load_dict={"model": model, "optimizer": optimizer}, enabled=True).attach(engine)
    engine.run(DATA, max_epochs=5)
    assert started_epochs == [5]


def test_resume_without_checkpoint_names_ckpt_dir(tmp_path):
    engine, model, _, started_epochs = _setup()
    ckpt_dir = tmp_path / "ckpts"
    ckpt_dir.mkdir()
    _touch(ckpt_dir, "model.pt")
    ResumeFromCheckpoint(str(ckpt_dir), load_dict={"model": model}, enabled=True).attach(engine)
    with pytest.raises(FileNotFoundError, match=re.escape(str(ckpt_dir))):
        engine.run(DATA, max_epochs=1)
    assert started_epochs == []


def test_fresh_run_refuses_an_earlier_runs_checkpoints(tmp_path):
    """Without --resume, a run beside an earlier run's checkpoints stops before training and names the files."""
    _train(tmp_path, max_epochs=2)
    (tmp_path / "model.pt").write_bytes(b"best")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    engine, model, _optimizer, started_epochs = _setup(seed=1)
    handler = ResumeFromCheckpoint(str(tmp_path), load_dict={"model": model}, outputs=[str(tmp_path / "model.pt")])
    handler.attach(engine)
    with pytest.raises(FileExistsError, match=r"--resume true.*--overwrite true") as error:
        engine.run(DATA, max_epochs=3)
    assert "model.pt" in str(error.value) and "checkpoint_epoch=2.pt" in str(error.value)
    assert started_epochs == []
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_overwrite_starts_a_fresh_run_over_earlier_checkpoints(tmp_path):
    _train(tmp_path, max_epochs=2)
    engine, model, _optimizer, started_epochs = _setup(seed=1)
    initial = model.weight.detach().clone()
    weight_at_start = []
    ResumeFromCheckpoint(str(tmp_path), load_dict={"model": model}, overwrite="true").attach(engine)
    engine.add_event_handler(Events.EPOCH_STARTED, lambda _e: weight_at_start.append(model.weight.detach().clone()))
    engine.run(DATA, max_epochs=1)
    assert started_epochs == [1]
    assert torch.equal(weight_at_start[0], initial)
    assert latest_checkpoint(str(tmp_path)) is None, "the earlier run's checkpoints would be resumed later"
    # a fresh run in an empty or missing folder needs no flag
    engine, model, _, started_epochs = _setup()
    ResumeFromCheckpoint(str(tmp_path / "missing"), load_dict={"model": model}).attach(engine)
    engine.run(DATA, max_epochs=1)
    assert started_epochs == [1]


def test_fine_tuning_in_place_may_replace_the_file_it_starts_from(tmp_path):
    """MONAI Label's training loads model.pt with a CheckpointLoader and writes its successor there."""
    _, model = _train(tmp_path, max_epochs=1, n_saved=None)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    (tmp_path / "checkpoint_final_iteration=3.pt").unlink()
    (tmp_path / "checkpoint_epoch=1.pt").unlink()
    engine, model, _, started_epochs = _setup(seed=1)
    CheckpointLoader(load_path=str(tmp_path / "model.pt"), load_dict={"model": model}).attach(engine)
    ResumeFromCheckpoint(str(tmp_path), load_dict={"model": model}, outputs=[str(tmp_path / "model.pt")]).attach(engine)
    engine.run(DATA, max_epochs=1)
    assert started_epochs == [1]


def test_resume_restores_the_best_metric_record(tmp_path):
    """A resumed run keeps model.pt unless a validation beats the best metric of the interrupted run."""
    scores = iter([0.9, 0.5, 0.7, 0.95])

    def run(max_epochs: int, resume: bool):
        engine, model, _optimizer, _ = _setup()
        evaluator = Engine(lambda _e, _b: None)
        evaluator.add_event_handler(Events.EPOCH_COMPLETED, lambda e: setattr(e.state, "metrics", {"m": next(scores)}))
        evaluator.state.key_metric_name = "m"  # what MONAI's key-metric saver reads
        best = AtomicCheckpointSaver(
            str(tmp_path), save_dict={"model": model}, save_key_metric=True, key_metric_filename="model.pt"
        )
        best.attach(evaluator)
        engine.add_event_handler(Events.EPOCH_COMPLETED, lambda _e: evaluator.run([0]))
        saved = {"model": model, "best_model": best}
        ResumeFromCheckpoint(str(tmp_path), load_dict=saved, enabled=resume).attach(engine)
        AtomicCheckpointSaver(str(tmp_path), save_dict=saved, save_interval=1, engine_key="trainer").attach(engine)
        engine.run(DATA, max_epochs=max_epochs)

    run(2, resume=False)  # metrics 0.9 (epoch 1, kept) and 0.5
    assert torch.all(torch.load(tmp_path / "model.pt", weights_only=True)["weight"] == 1)
    run(3, resume=True)  # epoch 3 scores 0.7 < 0.9: model.pt must stay epoch 1's
    assert torch.all(torch.load(tmp_path / "model.pt", weights_only=True)["weight"] == 1)
    run(4, resume=True)  # epoch 4 scores 0.95: replaces it
    assert torch.all(torch.load(tmp_path / "model.pt", weights_only=True)["weight"] == 4)


def test_seed_each_epoch_makes_a_resumed_run_draw_what_the_uninterrupted_one_drew(tmp_path):
    def run(max_epochs: int, resume: bool, ckpt_dir) -> list[float]:
        torch.manual_seed(123)  # the process state before training differs between the two runs
        draws: list[float] = []
        engine = Engine(lambda _e, _b: draws.append(float(torch.rand(1))))
        model = nn.Linear(1, 1)
        ResumeFromCheckpoint(str(ckpt_dir), load_dict={"model": model}, enabled=resume, seed=7).attach(engine)
        AtomicCheckpointSaver(str(ckpt_dir), save_dict={"model": model}, save_interval=1, engine_key="trainer").attach(
            engine
        )
        engine.run(DATA, max_epochs=max_epochs)
        return draws

    uninterrupted = run(3, False, tmp_path / "a")
    run(2, False, tmp_path / "b")
    torch.manual_seed(999)
    resumed = run(3, True, tmp_path / "b")
    assert resumed == uninterrupted[2 * len(DATA) :]
    assert uninterrupted[: len(DATA)] != uninterrupted[len(DATA) : 2 * len(DATA)], "each epoch draws anew"


def test_protect_output_dir(tmp_path):
    out = tmp_path / "out"
    engine = Engine(lambda _e, _b: None)
    ProtectOutputDir(str(out)).attach(engine)
    engine.run(DATA)  # missing folder: fine
    out.mkdir()
    (out / ".hidden").write_text("")
    engine.run(DATA)  # hidden scratch files do not count
    (out / "a_seg.png").write_bytes(b"earlier")
    with pytest.raises(FileExistsError, match=r"output_dir .*a_seg.png.*--overwrite true"):
        engine.run(DATA)
    assert (out / "a_seg.png").read_bytes() == b"earlier"
    engine = Engine(lambda _e, _b: None)
    ProtectOutputDir(str(out), overwrite="true").attach(engine)
    engine.run(DATA)


# ----------------------------------------------------------------------------------------------------------------
# ClipGradNorm


def _grad_norm(network: nn.Module) -> float:
    return float(torch.norm(torch.stack([p.grad.detach().norm() for p in network.parameters()])))


def _trainer_norms(max_norm: float) -> tuple[list[float], nn.Module]:
    """Gradient norms seen right after backward (after ClipGradNorm ran) in a trainer with a huge loss."""
    torch.manual_seed(0)
    network = nn.Linear(4, 2)
    batch = {"image": torch.randn(3, 4), "label": torch.randn(3, 2)}
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=[batch, batch],
        network=network,
        optimizer=torch.optim.SGD(network.parameters(), lr=1e-6),
        loss_function=lambda pred, label: 1e6 * ((pred - label) ** 2).mean(),
    )
    ClipGradNorm(max_norm).attach(trainer)
    norms: list[float] = []
    trainer.add_event_handler(IterationEvents.BACKWARD_COMPLETED, lambda e: norms.append(_grad_norm(e.network)))
    trainer.run()
    return norms, network


def test_clip_grad_norm_limits_the_norm_before_the_step():
    norms, _ = _trainer_norms(max_norm=0.5)
    assert len(norms) == 2
    assert all(n <= 0.5 + 1e-5 for n in norms)
    assert all(n > 0.4 for n in norms)  # clipped to the limit, not zeroed


def test_clip_grad_norm_zero_disables_clipping():
    norms, _ = _trainer_norms(max_norm=0)
    assert len(norms) == 2
    assert all(n > 1e3 for n in norms)


def test_clip_grad_norm_changes_the_update():
    torch.manual_seed(0)
    start = nn.Linear(4, 2).weight.detach().clone()
    _, clipped = _trainer_norms(max_norm=0.5)
    _, free = _trainer_norms(max_norm=0)
    clipped_step = (clipped.weight.detach() - start).norm()
    free_step = (free.weight.detach() - start).norm()
    assert clipped_step <= 2 * 1e-6 * 0.5 + 1e-9  # two steps of lr * max_norm at most
    assert free_step > 100 * clipped_step


def test_clip_grad_norm_rejects_negative():
    with pytest.raises(ValueError, match="max_norm"):
        ClipGradNorm(-1.0)


# ----------------------------------------------------------------------------------------------------------------
# iteration_loss


def test_iteration_loss_of_a_batch_and_of_a_decollated_batch():
    loss = torch.tensor(0.25, requires_grad=True) * 2
    value = iteration_loss({"loss": loss, "pred": torch.zeros(2)})
    assert value.item() == 0.5 and not value.requires_grad
    decollated = [{"loss": 0.5, "pred": torch.zeros(1)}, {"loss": 0.5, "pred": torch.ones(1)}]
    assert iteration_loss(decollated).item() == 0.5
    assert iteration_loss(tuple(decollated)).item() == 0.5


@pytest.mark.parametrize("decollate", [False, True])
def test_iteration_loss_gives_an_epochs_mean_loss(decollate):
    torch.manual_seed(0)
    network = nn.Linear(4, 2)
    batches = [{"image": torch.randn(3, 4), "label": torch.randn(3, 2)} for _ in range(3)]
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=batches,
        network=network,
        optimizer=torch.optim.SGD(network.parameters(), lr=0.1),
        loss_function=nn.MSELoss(),
        decollate=decollate,
        key_train_metric={"train_loss": Average(output_transform=iteration_loss)},
    )
    losses: list[float] = []
    trainer.add_event_handler(
        IterationEvents.LOSS_COMPLETED, lambda e: losses.append(float(e.state.output["loss"].detach()))
    )
    trainer.run()
    assert len(losses) == 3 and len(set(losses)) == 3
    assert trainer.state.metrics["train_loss"] == pytest.approx(sum(losses) / 3)


def test_checked_loader_names_the_file_and_key_when_the_network_does_not_fit(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"model": torch.nn.Linear(2, 2).state_dict()}, path)
    loader = CheckedCheckpointLoader(str(path), {"model": torch.nn.Linear(3, 2)}, config_key="ckpt_dir")
    with pytest.raises(ValueError, match=r"model\.pt.*'ckpt_dir'.*does not fit the configured network.*weight"):
        loader(Engine(lambda engine, batch: None))


def test_resume_flag_from_the_command_line(tmp_path):
    """``--resume false`` reaches the handler as the string 'false': it must mean no resume, not a silent one."""
    _train(tmp_path, max_epochs=2)
    engine, model, optimizer, started_epochs = _setup(seed=1)
    ResumeFromCheckpoint(
        str(tmp_path), load_dict={"model": model, "optimizer": optimizer}, enabled="false", overwrite="true"
    ).attach(engine)
    engine.run(DATA, max_epochs=1)
    assert started_epochs == [1], "started afresh"
    assert ResumeFromCheckpoint(str(tmp_path), load_dict={"model": model}, enabled="True").enabled
    with pytest.raises(ValueError, match="resume"):
        ResumeFromCheckpoint(str(tmp_path), load_dict={"model": model}, enabled="yes please")
