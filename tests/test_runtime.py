"""Device selection names the caller's key; seeds are functions of their parts."""

import pytest
import torch

from ism.cli import main
from ism.errors import ConfigError
from ism.runtime import derived_seed, select_device


def test_a_bad_device_name_is_refused_naming_the_source():
    with pytest.raises(ConfigError, match=r"^config key 'train.device': 'tpu' is not one of"):
        select_device("tpu")
    with pytest.raises(ConfigError, match=r"^--device: 'cuda:x' is not one of"):
        select_device("cuda:x", source="--device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_names_the_source():
    with pytest.raises(ConfigError, match=r"^--device: 'cuda' was requested but no CUDA device is visible"):
        select_device("cuda", source="--device")
    assert select_device("auto") == torch.device("cpu")


def test_ism_sample_refuses_a_bad_device_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", "--checkpoint", str(tmp_path / "model.pt"), "--steps", "1", "--device", "tpu"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "argument --device: 'tpu' is not one of" in err, err


def test_derived_seeds_differ_by_part_and_repeat():
    assert derived_seed("step", 0, 1) == derived_seed("step", 0, 1)
    assert len({derived_seed("step", 0, s) for s in range(1000)}) == 1000
    assert derived_seed("step", 1, 0) != derived_seed("step", 0, 1)
