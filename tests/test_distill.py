"""Distillation (--teacher): the teacher's own preprocessing, its soft targets on unknown labels, a full run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgecls.data import load_dataset
from edgecls.errors import ConfigError
from edgecls.preprocess import preprocess
from edgecls.train import fit, load_checkpoint
from edgecls.train.losses import distill_loss


@pytest.fixture(scope="module")
def teacher_run(synth_small, tmp_path_factory):
    """A tiny two-epoch finetune run at 64 px (the teacher; do not change it)."""
    from edgecls.config import build_config
    from edgecls.train.config import TrainConfig

    out = tmp_path_factory.mktemp("teacher") / "run"
    cfg = build_config(TrainConfig, overrides=dict(
        data=str(synth_small), out=str(out), backbone="timm:test_efficientnet", pretrained=False, img_size=64,
        epochs=2, batch_size=16, workers=0, progress=False, amp=False, strategy="finetune"))
    fit(cfg)
    return out


def test_distill_loss_teaches_unknown_entries_unless_masked():
    student = torch.zeros(2, 3, requires_grad=True)
    teacher = torch.tensor([[4.0, -4.0, 0.0], [0.0, 4.0, -4.0]])
    known = torch.tensor([[True, False, True], [True, True, False]])
    distill_loss(student, teacher, None, 2.0).backward()
    assert (student.grad != 0).sum() == 4  # every entry where the teacher is not at 0.5, NA ones included
    student.grad = None
    distill_loss(student, teacher, known, 2.0).backward()
    assert (student.grad[~known] == 0).all() and (student.grad[known] != 0).sum() == 2
    # a student that agrees with the teacher is at the loss minimum (the soft targets' entropy)
    agree = teacher.clone().requires_grad_(True)
    distill_loss(agree, teacher, None, 1.0).backward()
    assert torch.allclose(agree.grad, torch.zeros_like(agree.grad), atol=1e-7)


def test_teacher_renormalises_and_resizes_the_student_batch(teacher_run, synth_small):
    from edgecls.train._distill import Teacher

    ckpt = load_checkpoint(teacher_run)
    ds = load_dataset(synth_small)
    sample = ds.split("train").samples[0]
    # a student with other statistics at the same size: exactly the teacher's own input once renormalised
    student = ckpt.preprocess.replace(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    teacher = Teacher([teacher_run], ckpt.class_names, student, torch.device("cpu"))
    x_student = torch.from_numpy(preprocess(sample.path, student))[None]
    x_teacher = torch.from_numpy(preprocess(sample.path, ckpt.preprocess))[None]
    with torch.no_grad():
        own = teacher.members[0].model(x_teacher)
    torch.testing.assert_close(teacher.logits(x_student), own, atol=1e-4, rtol=1e-4)
    # another input size: resized to the teacher's 64 px
    small = Teacher([teacher_run], ckpt.class_names, student.replace(img_size=48), torch.device("cpu"))
    x48 = torch.from_numpy(preprocess(sample.path, student.replace(img_size=48)))[None]
    assert small.logits(x48).shape == own.shape
    cached = teacher.logits_for([sample])
    torch.testing.assert_close(cached, own, atol=1e-5, rtol=1e-5)


def test_teacher_with_other_labels_is_refused(teacher_run):
    with pytest.raises(ConfigError, match="a teacher must predict the same classes"):
        from edgecls.train._distill import Teacher

        Teacher([teacher_run], ("a", "b"), load_checkpoint(teacher_run).preprocess, torch.device("cpu"))


def test_several_teachers_teach_the_mean_of_their_probabilities(teacher_run, synth_small, tmp_path, tiny_config):
    from edgecls.train._distill import Teacher

    other = tmp_path / "other"  # a second teacher at another input size (its own preprocessing)
    fit(tiny_config(synth_small, other, epochs=1, img_size=48, seed=1))
    ckpt = load_checkpoint(teacher_run)
    samples = load_dataset(synth_small).split("train").samples[:4]
    device = torch.device("cpu")
    x = torch.from_numpy(np.stack([preprocess(s.path, ckpt.preprocess) for s in samples]))
    a, b = (Teacher([r], ckpt.class_names, ckpt.preprocess, device) for r in (teacher_run, other))
    la, lb = a.logits(x), b.logits(x)
    assert not torch.allclose(la, lb, atol=1e-3)  # two different teachers
    # the un-augmented cache: each member through its own eval preprocessing
    ca, cb = a.logits_for(samples), b.logits_for(samples)
    for t in (1.0, 3.0):
        both = Teacher([teacher_run, other], ckpt.class_names, ckpt.preprocess, device, temperature=t)
        mean = (torch.sigmoid(la / t) + torch.sigmoid(lb / t)) / 2
        torch.testing.assert_close(torch.sigmoid(both.logits(x) / t), mean, atol=1e-5, rtol=1e-5)
        cached = (torch.sigmoid(ca / t) + torch.sigmoid(cb / t)) / 2
        torch.testing.assert_close(torch.sigmoid(both.logits_for(samples) / t), cached, atol=1e-5, rtol=1e-5)
    # one teacher is that teacher, unchanged
    torch.testing.assert_close(Teacher([teacher_run], ckpt.class_names, ckpt.preprocess, device,
                                       temperature=3.0).logits(x), la)


@pytest.mark.parametrize("extra", [dict(img_size=48), dict(img_size=48, augment="none"),
                                   dict(strategy="freeze", cache_features=True)])
def test_a_student_of_another_input_size_trains_from_the_teacher(teacher_run, synth_small, tmp_path, tiny_config,
                                                                 extra):
    plain = fit(tiny_config(synth_small, tmp_path / "plain", epochs=1, **extra))
    student = fit(tiny_config(synth_small, tmp_path / "student", epochs=1, teacher=str(teacher_run),
                              distill_weight=0.7, distill_temperature=2.0, **extra))
    assert student.stopped == "completed"
    loss = lambda run: [json.loads(x)["train_loss"] for x in (run / "history.jsonl").read_text().splitlines()]  # noqa: E731
    assert not np.allclose(loss(tmp_path / "plain"), loss(tmp_path / "student"))  # the teacher's term is in it
    rows = [json.loads(x) for x in (tmp_path / "student" / "history.jsonl").read_text().splitlines()]
    assert all(0 < r["teacher_seconds"] < r["seconds"] for r in rows)  # its cost, within the run
    assert "teacher_seconds" not in (tmp_path / "plain" / "history.jsonl").read_text()
    ckpt = load_checkpoint(tmp_path / "student")
    assert ckpt.preprocess.img_size == (48 if "img_size" in extra else 64)
    assert ckpt.config["teacher"] == [str(teacher_run)] and ckpt.config["distill_weight"] == 0.7
    assert plain.best_map >= 0 and not (tmp_path / "student" / "head").exists()
