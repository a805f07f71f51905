"""DDP or FSDP from the advisor's estimate and the GPU size, and the launch command built from it."""
import sys

import pytest

from studio.advisor.parallel import choose_strategy, sharded_gb
from worker.launch_plan import Devices, launcher_args, plan

EST = {"total_gb": 30.0, "parts": {"weights": 14.0, "trainable_state": 10.0, "activations": 4.0, "logits": 1.5,
                                   "overhead": 0.5}}


def test_auto_takes_ddp_when_the_job_fits_one_gpu_and_fsdp_when_it_does_not():
    assert choose_strategy("auto", 4, EST, 80).name == "ddp"
    s = choose_strategy("auto", 4, EST, 24)
    assert s.name == "fsdp" and s.processes == 4
    assert "30.0 GB exceeds one 24 GB GPU" in s.reason and "about 12.0 GB each" in s.reason
    assert sharded_gb(EST, 4) == pytest.approx(14 / 4 + 10 / 4 + 4 + 1.5 + 0.5)


def test_the_boundary_is_the_usable_memory_not_the_label():
    assert choose_strategy("auto", 2, {"total_gb": 23.2}, 24).name == "ddp"  # 0.97 x 24 = 23.28 usable
    assert choose_strategy("auto", 2, {"total_gb": 24.0}, 24).name == "fsdp"  # the label is not what fits
    assert choose_strategy("auto", 2, {"total_gb": 23.3}, 24).name == "fsdp"


def test_asked_for_one_gpu_no_estimate_or_an_explicit_choice():
    assert choose_strategy("fsdp", 1, EST, 24).name == "single"
    assert choose_strategy("ddp", 2, EST, 24).name == "ddp"  # the person's choice wins
    assert choose_strategy("fsdp", 2, {}, 80).name == "fsdp"
    assert choose_strategy("auto", 2, None, 80).name == "ddp"
    with pytest.raises(ValueError, match="distributed must be one of auto, ddp, fsdp"):
        choose_strategy("zero3", 2, EST, 80)


def test_plan_builds_an_argument_list_and_refuses_too_many_gpus():
    gpus = Devices("cuda", 4, 24.0)
    one = plan("train", {"gpus": 1}, gpus)
    assert one.argv(7, 3) == [sys.executable, "-m", "worker.job_process", "7", "3"] and not one.env

    fsdp = plan("train", {"gpus": 4, "distributed": "auto", "estimate": EST}, gpus)
    argv = fsdp.argv(7, 3)
    assert argv[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert argv[-4:] == ["-m", "worker.job_process", "7", "3"]
    assert "--use_fsdp" in argv and "--multi_gpu" not in argv and argv[argv.index("--num_processes") + 1] == "4"
    assert fsdp.env == {"STUDIO_DISTRIBUTED": "fsdp"}

    cpu = plan("train", {"gpus": 2, "distributed": "fsdp"}, Devices("cpu", 2))
    assert cpu.strategy.name == "ddp" and cpu.env["CUDA_VISIBLE_DEVICES"] == ""  # FSDP needs GPUs
    assert "--multi_gpu" in launcher_args(cpu.strategy, cpu.devices, 1234)

    refused = plan("train", {"gpus": 8}, gpus)
    assert "asks for 8 GPUs" in refused.refusal and "has 4 GPUs of 24 GB" in refused.refusal
    assert plan("export", {"gpus": 8}, gpus).refusal == ""  # exports run on one device
