"""Training: schedule, loss decrease, checkpoints and exact resume, data layouts, dedup, blur, CLI."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from dstfuse_stream import DSTFuse, get_config, load_model
from dstfuse_stream.checkpoint import load_checkpoint
from dstfuse_stream.config import DEFAULT_PRESET, DSTFuseConfig
from dstfuse_stream.errors import ConfigError, SourceError, StreamMismatchError
from dstfuse_train.cli import main as train_main
from dstfuse_train.data import CropSampler, Degradation, PairImage, load_pairs, random_crop_pair
from dstfuse_train.losses import fusion_loss, mapping_loss
from dstfuse_train.trainer import MODULES, Trainer, TrainConfig, module_span, phase_modules, phase_name



pytestmark = pytest.mark.usefixtures("one_torch_thread")


def synthetic_pairs(n: int = 2, size_hw: tuple[int, int] = (40, 48), seed: int = 0) -> list[PairImage]:
    """IR with a bright blob on a dark background; visible with texture (gradients + noise)."""
    rng = np.random.default_rng(seed)
    h, w = size_hw
    yy, xx = np.mgrid[:h, :w]
    pairs = []
    for k in range(n):
        cy, cx = rng.integers(8, h - 8), rng.integers(8, w - 8)
        ir = 40 + 200 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 30.0)
        vis = 60 + 40 * np.sin(xx / 3.0 + k) + 30 * (yy / h) + rng.normal(0, 8, (h, w))
        pairs.append(PairImage(f"s{k}", np.clip(ir, 0, 255).astype(np.uint8), np.clip(vis, 0, 255).astype(np.uint8)))
    return pairs


def tiny_trainer(tmp_path, *, epochs=2, lr=1e-4, crop=32, batch=2, max_minutes=None, seed=0, **phase) -> Trainer:
    cfg = TrainConfig(epochs=epochs, lr=lr, crop_size=crop, batch_size=batch, max_side=None, seed=seed,
                      num_threads=1, max_minutes=max_minutes, **phase)
    sampler = CropSampler(synthetic_pairs(4), crop_size=crop, batch_size=batch, degradation=Degradation(blur_prob=0.5), seed=seed)
    torch.manual_seed(seed)
    return Trainer(DSTFuse(get_config("lite")), sampler, cfg, tmp_path, device="cpu", progress=False)


def module_params(model: DSTFuse, name: str) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in getattr(model, name).named_parameters()}


# ---------------------------------------------------------------- config and schedule
def test_default_schedule_table():
    cfg = TrainConfig()
    table = [tuple(phase_modules(cfg, e)[m] for m in MODULES) for e in range(cfg.epochs)]
    assert table == (
        [("cst", "reconstruction", None)] * 3
        + [("cst", "fusion", None)] * 3
        + [("cst", None, None)] * 4
        + [(None, None, "mapping")] * 5
    )
    assert [phase_name(cfg, e) for e in (0, 3, 6, 10)] == ["reconstruction+cst", "fusion+cst", "cst", "mapping"]
    assert cfg.mapping_start == 10


@pytest.mark.parametrize(
    "kwargs, match",
    [({"crop_size": 30}, "multiple of 4"), ({"epochs": 0}, "epochs"), ({"recipe": "magic"}, "recipe"),
     ({"lr": 0.0}, "lr"), ({"max_side": 64, "crop_size": 128}, "max_side")],
)
def test_train_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**kwargs)


def test_train_config_dict_round_trip():
    cfg = TrainConfig(epochs=4, crop_size=64, max_minutes=2.5)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ConfigError, match="unknown TrainConfig keys"):
        TrainConfig.from_dict({"epoch": 3})


def test_mapping_lr_sets_only_the_mapping_optimizer(tmp_path):
    trainer = tiny_trainer(tmp_path, lr=1e-4)
    assert {n: o.param_groups[0]["lr"] for n, o in trainer.optimizers.items()} == {"cst": 1e-4, "fusion": 1e-4, "mapping": 1e-4}
    cfg = TrainConfig(lr=1e-3, mapping_lr=1e-2)
    assert [cfg.module_lr(n) for n in MODULES] == [1e-3, 1e-3, 1e-2]
    with pytest.raises(ConfigError, match="mapping_lr"):
        TrainConfig(mapping_lr=0.0)


@pytest.mark.parametrize(
    "epoch, changed",
    [(0, {"cst", "fusion"}), (3, {"cst", "fusion"}), (6, {"cst"}), (10, {"mapping"})],
)
def test_each_phase_updates_only_its_modules(tmp_path, epoch, changed):
    trainer = tiny_trainer(tmp_path, epochs=15)
    batch = trainer._to_device(next(trainer.sampler.batches(0)))
    before = {m: module_params(trainer.model, m) for m in MODULES}
    terms = trainer.train_step(epoch, *batch)
    after = {m: module_params(trainer.model, m) for m in MODULES}
    for m in MODULES:
        diffs = [k for k in before[m] if not torch.equal(before[m][k], after[m][k])]
        if m in changed:
            assert diffs, f"{m} should change in epoch {epoch}"
        else:
            assert not diffs, f"{m} must not change in epoch {epoch}: {diffs}"
    expected_terms = {0: {"cst", "reconstruction"}, 3: {"cst", "fusion"}, 6: {"cst"}, 10: {"mapping"}}[epoch]
    assert set(terms) == expected_terms
    if epoch == 0:  # reconstruction does not use the fusion attention branch
        att = [k for k in before["fusion"] if k.startswith("attention.")]
        assert att and all(torch.equal(before["fusion"][k], after["fusion"][k]) for k in att)
    if epoch == 10:  # frozen modules are in eval mode during mapping
        assert not trainer.model.cst.training and not trainer.model.fusion.training and trainer.model.mapping.training


def test_overfitting_one_batch_lowers_each_phase_loss(tmp_path):
    # seeded and deterministic on CPU: fusion goes 0.643 -> 0.583 in 30 steps
    trainer = tiny_trainer(tmp_path, epochs=15, lr=1e-2, crop=16)
    ir, vis, sharp, _ = batch = trainer._to_device(next(trainer.sampler.batches(0)))
    losses = [trainer.train_step(3, *batch)["fusion"] for _ in range(30)]
    assert losses[-1] < 0.93 * losses[0], losses
    # mapping: learns at least as good a blend as the best constant attention on this batch
    model = trainer.model
    with torch.no_grad():
        deblurred, fused = model.cst(ir, vis).stage2, model.fusion.fuse(ir, vis)
        best_constant = min(float(mapping_loss(deblurred * a + fused * (1 - a), ir, sharp)) for a in np.linspace(0, 1, 11))
    losses = [trainer.train_step(10, *batch)["mapping"] for _ in range(60)]
    assert losses[-1] < losses[0] and losses[-1] <= best_constant * 1.001, (losses[0], losses[-1], best_constant)


# ---------------------------------------------------------------- checkpoints and resume
def test_checkpoint_reloads_to_identical_outputs(tmp_path):
    trainer = tiny_trainer(tmp_path, epochs=1)
    trainer.fit()
    ckpt = load_checkpoint(trainer.last_path)
    assert {"arch", "config", "state_dict", "epoch", "loss", "optimizers", "train_config", "history"} <= set(ckpt)
    assert ckpt["epoch"] == 1 and ckpt["train_config"]["crop_size"] == 32
    x = torch.rand(1, 1, 36, 44)
    y = torch.rand(1, 1, 36, 44)
    trainer.model.eval()
    with torch.no_grad():
        assert torch.equal(trainer.model(x, y), load_model(trainer.last_path)(x, y))


def test_resume_after_time_budget_stop_matches_uninterrupted_run(tmp_path):
    full = tiny_trainer(tmp_path / "full", epochs=3, recon_epochs=1, fusion_epochs=1, cst_epochs=2)
    full.fit()
    steps = full.sampler.steps_per_epoch()
    assert full.state.global_step == 3 * steps == 6

    cut = tiny_trainer(tmp_path / "cut", epochs=3, recon_epochs=1, fusion_epochs=1, cst_epochs=2, max_minutes=1e-9)
    cut.fit()  # stops after the first step and saves
    ckpt = load_checkpoint(cut.last_path)
    assert (ckpt["epoch"], ckpt["step_in_epoch"], ckpt["global_step"]) == (0, 1, 1)

    resumed = tiny_trainer(tmp_path / "cut", epochs=3, recon_epochs=1, fusion_epochs=1, cst_epochs=2)
    resumed.resume()
    assert resumed.state.epoch == 0 and resumed.state.step_in_epoch == 1
    assert int(resumed.optimizers["cst"].state_dict()["state"][0]["step"]) == 1
    resumed.fit()
    assert resumed.state.global_step == full.state.global_step
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    for name in MODULES:
        a, b = full.optimizers[name].state_dict()["state"], resumed.optimizers[name].state_dict()["state"]
        assert a.keys() == b.keys() and all(torch.equal(a[i]["exp_avg"], b[i]["exp_avg"]) for i in a)
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2]
    log = [json.loads(ln) for ln in (tmp_path / "cut" / "loss_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(6))
    assert (tmp_path / "cut" / "losses.png").stat().st_size > 1000


# ---------------------------------------------------------------- data
def write_pair(ir_dir, vis_dir, name, ir, vis):
    ir_dir.mkdir(parents=True, exist_ok=True)
    vis_dir.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(ir_dir / name), ir)
    cv2.imwrite(str(vis_dir / name), vis)


def test_load_pairs_both_layouts_and_dedup(tmp_path):
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (20, 24), dtype=np.uint8) for _ in range(4)]
    # paired layout: a.png, b.png
    write_pair(tmp_path / "p" / "ir", tmp_path / "p" / "vi", "a.png", imgs[0], imgs[1])
    write_pair(tmp_path / "p" / "ir", tmp_path / "p" / "vi", "b.png", imgs[2], imgs[3])
    # LLVIP layout: same IR pixels as a.png under another name (a duplicate) + one new pair
    root = tmp_path / "llvip"
    write_pair(root / "infrared" / "train", root / "visible" / "train", "010001.png", imgs[0], imgs[3])
    write_pair(root / "infrared" / "test", root / "visible" / "test", "190001.png", imgs[3], imgs[2])
    pairs, dropped = load_pairs([tmp_path / "p", root])
    assert dropped == 1
    assert [p.name for p in pairs] == ["p/a.png", "p/b.png", "llvip/190001.png"]
    assert np.array_equal(pairs[2].ir, imgs[3]) and np.array_equal(pairs[2].vis, imgs[2])
    assert load_pairs([root])[1] == 0 and len(load_pairs([root])[0]) == 2


def test_load_pairs_errors_and_resize(tmp_path):
    with pytest.raises(SourceError):
        load_pairs([tmp_path / "missing"])
    write_pair(tmp_path / "bad" / "ir", tmp_path / "bad" / "vi", "x.png", np.zeros((8, 8), np.uint8), np.zeros((8, 9), np.uint8))
    with pytest.raises(StreamMismatchError, match="expected registered images"):
        load_pairs([tmp_path / "bad"])
    write_pair(tmp_path / "big" / "ir", tmp_path / "big" / "vi", "x.png", np.zeros((50, 100), np.uint8), np.zeros((50, 100), np.uint8))
    (pair,), _ = load_pairs([tmp_path / "big"], max_side=40)
    assert pair.ir.shape == (20, 40) == pair.vis.shape


def test_random_crop_pair_same_window_and_pads_small_images():
    ir = np.arange(30 * 40, dtype=np.uint8).reshape(30, 40)
    vis = 255 - ir
    a, b = random_crop_pair(ir, vis, 16, np.random.default_rng(1))
    assert a.shape == (16, 16) and np.array_equal(b, 255 - a)
    small = np.arange(6, dtype=np.uint8).reshape(2, 3)
    c, d = random_crop_pair(small, small, 4, np.random.default_rng(0))
    assert np.array_equal(c, np.array([[0, 1, 2, 2], [3, 4, 5, 5], [3, 4, 5, 5], [3, 4, 5, 5]], np.uint8))


def test_crop_sampler_is_deterministic_per_epoch_and_keeps_sharp_visible():
    pairs = synthetic_pairs(3)
    s = CropSampler(pairs, crop_size=16, batch_size=2, crops_per_image=2, degradation=Degradation(blur_prob=1.0), seed=4)
    assert s.steps_per_epoch() == 3
    e0 = list(s.batches(0))
    assert len(e0) == 3 and all(x.shape == (2, 1, 16, 16) and x.dtype == np.float32 for b in e0 for x in b)
    again = list(s.batches(0))
    assert all(np.array_equal(x, y) for b1, b2 in zip(e0, again) for x, y in zip(b1, b2))
    assert not np.array_equal(e0[0][0], next(s.batches(1))[0])
    ir, vis_in, sharp, mask = e0[0]
    assert not np.allclose(vis_in, sharp) and vis_in.std() < sharp.std()
    assert np.array_equal(mask, np.ones_like(mask))  # every crop blurred, none partially
    no_blur = CropSampler(pairs, crop_size=16, batch_size=2, degradation=Degradation(blur_prob=0.0), seed=4)
    _, vis_in, sharp, mask = next(no_blur.batches(0))
    assert np.array_equal(vis_in, sharp) and not mask.any()


# ---------------------------------------------------------------- CLI
def test_cli_trains_and_exports_release_weights(tmp_path, capsys):
    for k, p in enumerate(synthetic_pairs(4)):
        write_pair(tmp_path / "d" / "ir", tmp_path / "d" / "vi", f"{k}.png", p.ir, p.vis)
    out, weights = tmp_path / "run", tmp_path / "w.pt"
    rc = train_main(["--data", str(tmp_path / "d"), "--out", str(out), "--preset", "lite", "--epochs", "2", "--recon-epochs", "1",
                     "--fusion-epochs", "0", "--cst-epochs", "1", "--crop", "32", "--batch-size", "2",
                     "--max-side", "0", "--threads", "1", "--device", "cpu", "--no-progress",
                     "--export-weights", str(weights), "--half"])
    assert rc == 0
    assert "4 pairs from 1 root(s), 0 duplicate(s) dropped" in capsys.readouterr().out
    ckpt = torch.load(weights, weights_only=True)
    assert "optimizers" not in ckpt and ckpt["epoch"] == 2 and ckpt["config"]["name"] == "lite"
    assert all(v.dtype == torch.float16 for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert load_model(weights).config == get_config("lite")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["train"]["epochs"] == 2 and cfg["num_pairs"] == 4 and cfg["steps_per_epoch"] == 2
    assert len((out / "loss_log.jsonl").read_text().splitlines()) == 4


def test_cli_bad_data_is_one_line_exit_2(tmp_path, capsys):
    assert train_main(["--data", str(tmp_path / "nope"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dstfuse-train: error:") and "nope" in err[0]


def test_shipped_weights_match_their_training_card():
    from dstfuse_stream.checkpoint import default_weights_path, file_sha256

    path = default_weights_path()
    card_path = path.with_suffix(".json")
    if not path.is_file() or not card_path.is_file():
        pytest.skip("shipped weights or training card not present")
    card = json.loads(card_path.read_text())
    assert file_sha256(path) == card["sha256"]
    ckpt = load_checkpoint(path)  # weights_only=True
    last = card["stages"][-1] if "stages" in card else card  # a recipe card: one summary per stage, in order
    assert "optimizers" not in ckpt and ckpt["epoch"] == last["epochs_completed"] == last["train_config"]["epochs"]
    assert [p["phase"] for p in last["per_phase_losses"]][-1] in ("mapping", "joint+mapping")  # the mapping phase was trained
    assert card["model_config"] == ckpt["config"] and load_model().config == get_config(DEFAULT_PRESET)
    if "stages" in card:
        assert card["total_steps"] == sum(s["global_steps"] for s in card["stages"])
        assert all(s["train_command"].startswith("dstfuse-train ") for s in card["stages"])


# ---------------------------------------------------------------- degradation-aware recipe
def test_degradation_curriculum_grows_the_longest_blur():
    d = Degradation(blur_lengths=(3, 21), curriculum_epochs=4)
    assert [d.max_length(e) for e in range(6)] == [8, 12, 16, 21, 21, 21]
    assert Degradation(blur_lengths=(3, 21)).max_length(0) == 21
    for bad in ({"blur_prob": 1.5}, {"blur_lengths": (9, 3)}, {"dark_gain": (0.0, 1.0)}, {"partial_prob": -0.1}):
        with pytest.raises(ConfigError):
            Degradation(**bad)


def test_partial_blur_leaves_part_of_the_crop_sharp_and_dark_lowers_the_mean():
    rng = np.random.default_rng(0)
    sharp = (rng.random((64, 64)) > 0.5).astype(np.float32)  # high-frequency texture: blur changes it everywhere
    full = CropSampler(synthetic_pairs(1), crop_size=64, batch_size=1,
                       degradation=Degradation(blur_prob=1.0, blur_lengths=(9, 9)))
    part = CropSampler(synthetic_pairs(1), crop_size=64, batch_size=1,
                       degradation=Degradation(blur_prob=1.0, blur_lengths=(9, 9), partial_prob=1.0))
    full_in, full_mask = full.degrade(sharp, np.random.default_rng(1))
    part_in, part_mask = part.degrade(sharp, np.random.default_rng(1))
    changed_full, changed_part = np.abs(full_in - sharp) > 1e-3, np.abs(part_in - sharp) > 1e-3
    assert changed_full.mean() > 0.9 and np.array_equal(full_mask, np.ones_like(full_mask))
    assert 0.05 < changed_part.mean() < 0.8  # a soft region is blurred, the rest stays exactly sharp
    assert part_mask[changed_part].mean() > 0.5 > part_mask[~changed_part].mean()  # the mask says where
    dark = CropSampler(synthetic_pairs(1), crop_size=64, batch_size=1,
                       degradation=Degradation(blur_prob=0.0, dark_prob=1.0, dark_gain=(0.5, 0.5)))
    dark_in, dark_mask = dark.degrade(sharp, np.random.default_rng(1))
    assert dark_in.mean() == pytest.approx(0.5 * sharp.mean(), abs=1e-6) and not dark_mask.any()


def test_video_pair_roots_give_every_nth_frame(tmp_path):
    root = tmp_path / "clip"
    root.mkdir()
    for name, offset in (("ir.mp4", 0), ("vi.mp4", 100)):
        writer = cv2.VideoWriter(str(root / name), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
        for i in range(7):
            writer.write(np.full((48, 64, 3), offset + 20 * i, np.uint8))
        writer.release()
    pairs, dropped = load_pairs([root], frame_step=3)
    assert [p.name for p in pairs] == ["clip/00000", "clip/00003", "clip/00006"] and dropped == 0
    assert np.allclose([p.ir.mean() for p in pairs], [0, 60, 120], atol=4)  # frames 0, 3, 6 (lossy codec)
    assert np.allclose([p.vis.mean() for p in pairs], [100, 160, 220], atol=4)


def test_recipes_choose_what_the_losses_call_v(tmp_path):
    paper = TrainConfig(recipe="paper")
    deg = TrainConfig()
    assert (paper.perceptual_weight, paper.restoration_weight, paper.perceptual_widths) == (100.0, 0.0, (16, 32, 64))
    assert (deg.recipe, deg.perceptual_weight, deg.restoration_weight, deg.perceptual_widths) == ("degradation", 1.0, 10.0, (8, 16, 32))
    assert TrainConfig(perceptual_weight=3.0).perceptual_weight == 3.0
    # a fully blurred batch: the degradation recipe's fusion loss targets the sharp crop, the paper's the input
    losses = {}
    for recipe in ("paper", "degradation"):
        trainer = tiny_trainer(tmp_path / recipe, epochs=15, recipe=recipe)
        trainer.sampler.degradation = Degradation(blur_prob=1.0, blur_lengths=(9, 9))
        ir, vis, sharp, _ = trainer._to_device(next(trainer.sampler.batches(0)))
        assert not torch.equal(vis, sharp)
        losses[recipe] = trainer.train_step(3, ir, vis, sharp)["fusion"]  # the loss before the update
    check = tiny_trainer(tmp_path / "check", epochs=15)
    check.sampler.degradation = Degradation(blur_prob=1.0, blur_lengths=(9, 9))
    ir, vis, sharp, _ = check._to_device(next(check.sampler.batches(0)))
    with torch.no_grad():
        fused = check.model.fusion.fuse(ir, vis)
        assert losses["degradation"] == pytest.approx(float(fusion_loss(fused, ir, sharp)), rel=1e-5)
        assert losses["paper"] == pytest.approx(float(fusion_loss(fused, ir, vis)), rel=1e-5)


def test_cosine_schedule_decays_each_module_over_its_own_epochs():
    from dstfuse_train.trainer import scheduled_lr

    cfg = TrainConfig(epochs=6, recon_epochs=1, fusion_epochs=1, cst_epochs=4, lr=1e-3, lr_schedule="cosine")
    assert module_span(cfg, "cst") == (0, 4) and module_span(cfg, "fusion") == (0, 2) and module_span(cfg, "mapping") == (4, 6)
    assert scheduled_lr(cfg, "cst", 0, 0, 10) == pytest.approx(1e-3)
    assert scheduled_lr(cfg, "cst", 2, 0, 10) == pytest.approx(5e-4)  # half way through its 4 epochs
    assert scheduled_lr(cfg, "fusion", 1, 5, 10) == pytest.approx(5e-4 * (1 + np.cos(np.pi * 15 / 20)))
    assert scheduled_lr(cfg, "mapping", 5, 10, 10) == pytest.approx(0.0, abs=1e-12)
    assert scheduled_lr(TrainConfig(lr=2e-4), "cst", 9, 3, 10) == 2e-4  # constant


def test_init_modules_copies_one_module_from_another_run(tmp_path):
    donor = tiny_trainer(tmp_path / "donor", epochs=1, seed=5)
    donor.fit()
    trainer = tiny_trainer(tmp_path / "new", epochs=1, seed=6)
    before = module_params(trainer.model, "fusion")
    trainer.init_modules({"cst": donor.last_path})
    assert all(torch.equal(v, donor.model.cst.state_dict()[k]) for k, v in trainer.model.cst.state_dict().items())
    assert all(torch.equal(v, module_params(trainer.model, "fusion")[k]) for k, v in before.items())
    with pytest.raises(ConfigError, match="unknown module"):
        trainer.init_modules({"decoder": donor.last_path})


def test_blend_head_preset_has_no_reconstruction_stage(tmp_path):
    sampler = CropSampler(synthetic_pairs(2), crop_size=32, batch_size=2)
    with pytest.raises(ConfigError, match="reconstruction"):
        Trainer(DSTFuse(get_config("stream")), sampler, TrainConfig(recon_epochs=1), tmp_path, device="cpu", progress=False)
    trainer = Trainer(DSTFuse(get_config("stream")), sampler, TrainConfig(epochs=2, recon_epochs=0, fusion_epochs=1, cst_epochs=1),
                      tmp_path, device="cpu", progress=False)
    terms = trainer.train_step(0, *trainer._to_device(next(sampler.batches(0))))
    assert set(terms) == {"cst", "fusion", "logit_penalty"}


def test_joint_epochs_train_the_fusion_module_on_the_mapped_visible_image(tmp_path):
    cfg = TrainConfig(epochs=5, recon_epochs=0, fusion_epochs=1, cst_epochs=1, joint_epochs=2, lr_schedule="cosine")
    assert [phase_modules(cfg, e)["fusion"] for e in range(5)] == ["fusion", None, None, "joint", "joint"]
    assert phase_name(cfg, 3) == "joint+mapping"
    assert module_span(cfg, "fusion") == (0, 5) and module_span(cfg, "mapping") == (1, 5)
    with pytest.raises(ConfigError, match="joint_epochs: expected at most the 4 mapping-phase"):
        TrainConfig(epochs=5, recon_epochs=0, fusion_epochs=1, cst_epochs=1, joint_epochs=5)

    sampler = CropSampler(synthetic_pairs(2), crop_size=32, batch_size=2, degradation=Degradation(blur_prob=1.0), seed=0)
    torch.manual_seed(0)
    trainer = Trainer(DSTFuse(get_config("stream")), sampler, TrainConfig(epochs=2, recon_epochs=0, fusion_epochs=0, cst_epochs=0,
                      joint_epochs=1, lr=1e-3), tmp_path, device="cpu", progress=False)
    ir, vis, sharp, mask = batch = trainer._to_device(next(sampler.batches(0)))
    model = trainer.model
    with torch.no_grad():  # what the step's losses see: the inference graph's fused image
        fused = model.intermediates(ir, vis).fused
    before = {m: module_params(model, m) for m in MODULES}
    terms = trainer.train_step(1, *batch)
    assert set(terms) == {"fusion", "mapping", "logit_penalty"}
    assert terms["fusion"] == pytest.approx(float(fusion_loss(fused, ir, sharp)), rel=1e-5)
    assert terms["mapping"] == pytest.approx(float(mapping_loss(fused, ir, sharp)), rel=1e-5)
    changed = {m for m in MODULES if any(not torch.equal(v, module_params(model, m)[k]) for k, v in before[m].items())}
    assert changed == {"fusion", "mapping"}
    before = {m: module_params(model, m) for m in MODULES}
    assert set(trainer.train_step(0, *batch)) == {"mapping"}  # the mapping-only epoch leaves the fusion module alone
    assert all(torch.equal(v, module_params(model, "fusion")[k]) for k, v in before["fusion"].items())


def test_attention_weight_teaches_the_mapping_where_the_input_is_blurred(tmp_path):
    trainer = tiny_trainer(tmp_path, epochs=15, lr=1e-2, crop=32, attention_weight=1.0)
    trainer.sampler.degradation = Degradation(blur_prob=1.0, blur_lengths=(7, 7), partial_prob=1.0)
    ir, vis, sharp, mask = batch = trainer._to_device(next(trainer.sampler.batches(0)))
    first = trainer.train_step(10, *batch)
    assert set(first) == {"mapping", "attention"}
    for _ in range(60):
        last = trainer.train_step(10, *batch)
    assert last["attention"] < 0.8 * first["attention"]
    model = trainer.model
    with torch.no_grad():
        deblurred, fused = model.cst(ir, vis).stage2, model.fusion.fuse(ir, vis)
        att = model.mapping.attention_map(ir, vis, deblurred)
    assert float(att[mask > 0.9].mean()) > float(att[mask < 0.1].mean())  # higher where blurred


def test_recipe_runs_stages_in_order_inits_from_earlier_ones_and_skips_finished(tmp_path):
    from dstfuse_train.card import build_recipe_card
    from dstfuse_train.recipe import STREAM_STAGES, Stage, run_recipe, stage_command

    for k, p in enumerate(synthetic_pairs(4)):
        write_pair(tmp_path / "d" / "ir", tmp_path / "d" / "vi", f"{k}.png", p.ir, p.vis)
    tiny = ("--preset", "lite", "--crop", "32", "--batch-size", "2", "--max-side", "0", "--device", "cpu", "--no-progress",
            "--recon-epochs", "0", "--fusion-epochs", "0")
    stages = (
        Stage("a", (*tiny, "--epochs", "1", "--cst-epochs", "1")),
        Stage("b", (*tiny, "--epochs", "1", "--cst-epochs", "0"), after=("a",), init=(("cst", "a"),)),
    )
    out = tmp_path / "recipe"
    walls = run_recipe(stages, out, [str(tmp_path / "d")])
    assert list(walls) == ["a", "b"] and all(v > 0 for v in walls.values())
    a, b = (load_checkpoint(out / n / "last.pt")["state_dict"] for n in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("cst."))  # b started from a's CST, trained only mapping
    assert not all(torch.equal(a[k], b[k]) for k in a if k.startswith("mapping."))
    assert run_recipe(stages, out, [str(tmp_path / "d")]) == {"a": 0.0, "b": 0.0}  # finished stages are skipped
    card = build_recipe_card([out / "a", out / "b"], out / "b" / "last.pt")
    assert [s["run"] for s in card["stages"]] == ["a", "b"] and card["total_steps"] == 4
    # the shipped recipe: CST curriculum from one direction to all, mapping after both modules
    names = [s.name for s in STREAM_STAGES]
    assert names == ["fusion", "fusion_ft", "cst_a", "cst_b", "cst_c", "cst_d", "mapping", "joint"]
    cmd = stage_command(STREAM_STAGES[-2], out, ["D"])
    assert f"cst={out / 'cst_d' / 'last.pt'}" in cmd and f"fusion={out / 'fusion_ft' / 'last.pt'}" in cmd
    cmd = stage_command(STREAM_STAGES[-1], out, ["D"])  # joint: every module from the mapping stage
    assert all(f"{m}={out / 'mapping' / 'last.pt'}" in cmd for m in MODULES) and cmd[cmd.index("--joint-epochs") + 1] == "8"


# ---------------------------------------------------------------- blend-map upsampler (distill)
def _tiny_blend_model(**overrides):
    torch.manual_seed(0)
    cfg = DSTFuseConfig(name="tiny-blend", widths=(4, 4, 4), num_res_blocks=0, kernel_size=3, attention_width=4,
                        pixel_unshuffle=2, residual="linear", cst_ir_input=True, fusion_head="blend", mapping="before_fusion",
                        **overrides)
    model = DSTFuse(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():  # the blend head starts at zero: give every conv something to decide
            if not name.startswith("upsampler."):
                p.add_(0.3 * torch.randn_like(p))
    return model


def test_upsampler_starts_as_bilinear_and_distillation_trains_only_it_toward_full_resolution():
    from dstfuse_train.distill import evaluate, train_upsampler, upsampler_example, with_upsampler

    teacher = _tiny_blend_model()
    student = with_upsampler(teacher, 4)
    assert student.config.upsampler_width == 4 and teacher.upsampler is None
    rng = np.random.default_rng(0)
    images = [(rng.integers(0, 256, (40, 48), dtype=np.uint8), rng.integers(0, 256, (40, 48), dtype=np.uint8)) for _ in range(3)]
    frames = [tuple(torch.from_numpy(x.astype(np.float32) / 255)[None, None] for x in pair) for pair in images]
    with torch.no_grad():  # untrained upsampler = bilinear: identical outputs at every scale
        for scale in (1.0, 0.5, 0.25):
            for ir, vis in frames:
                assert torch.equal(teacher.set_work_scale(scale)(ir, vis), student.set_work_scale(scale)(ir, vis))
    before = evaluate(student, frames, scales=(0.5,))
    example = upsampler_example(student, *images[0], 2)
    assert example.shape == (5, 48, 48) and example.dtype == torch.float16  # padded to a multiple of 8 x 2
    frozen = {k: v.clone() for k, v in student.state_dict().items() if not k.startswith("upsampler.")}
    examples = [upsampler_example(student, ir, vis, 2) for ir, vis in images]
    seen = []
    train_upsampler(student, examples, steps=60, lr=1e-2, batch_size=2, crop=32, seed=0,
                    on_eval=lambda step, loss: seen.append(step), eval_every=30)
    after = evaluate(student, frames, scales=(0.5,))
    assert seen == [30, 60]
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in frozen.items())  # nothing else moved
    assert after["psnr_ws0.5_mean"] > before["psnr_ws0.5_mean"] + 0.5
    with torch.no_grad():  # work scale 1 never uses it
        for ir, vis in frames:
            assert torch.equal(teacher.set_work_scale(1.0)(ir, vis), student.set_work_scale(1.0)(ir, vis))


def test_distill_export_writes_a_release_checkpoint_with_the_upsampler(tmp_path):
    import json

    from dstfuse_stream.checkpoint import load_checkpoint, load_model, save_checkpoint
    from dstfuse_train.distill import export_distilled, with_upsampler

    teacher = _tiny_blend_model()
    save_checkpoint(tmp_path / "teacher.pt", teacher, epoch=7, loss=0.25)
    (tmp_path / "teacher.json").write_text(json.dumps({"preset": "tiny-blend"}))
    run = tmp_path / "run"
    run.mkdir()
    student = with_upsampler(teacher, 4)
    with torch.no_grad():
        student.upsampler.body[-1].bias.fill_(0.5)
    save_checkpoint(run / "distilled.pt", student, epoch=60)
    (run / "log.jsonl").write_text(json.dumps({"step": 0, "psnr_ws0.5_min": 30.0}) + "\n" + json.dumps({"step": 60, "wall_s": 3.0, "psnr_ws0.5_min": 38.0}) + "\n")
    out = export_distilled(run, tmp_path / "teacher.pt")
    ckpt = load_checkpoint(out)
    assert ckpt["epoch"] == 7 and ckpt["config"]["upsampler_width"] == 4
    card = json.loads((tmp_path / "teacher.json").read_text())
    assert card["distill"]["steps_trained"] == 60 and card["distill"]["end"]["psnr_ws0.5_min"] == 38.0
    assert card["model_config"]["upsampler_width"] == 4
    model = load_model(out)
    assert float(model.upsampler.body[-1].bias.detach()[0]) == 0.5
