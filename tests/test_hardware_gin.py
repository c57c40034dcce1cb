"""gin/hardware/*.gin: every binding parses together with a run file and a model file through the launcher's own
parser, and each file's mesh multiplies to the device count it states (HARDWARE_DEVICES), read from the bound
make_mesh values: no devices are needed."""
from __future__ import annotations

import math
import os

import gin
import pytest

from flan_mix import launcher
from flan_mix.models import attention
from flan_mix.runtime import partitioning

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HARDWARE = {  # file -> the device count it is written for (None: any)
    "gin/hardware/cpu.gin": None,
    "gin/hardware/gpu.gin": None,
    "gin/hardware/gpu_1.gin": 1,
    "gin/hardware/gpu_multinode.gin": 32,
    "gin/hardware/tpu_v5e_pod.gin": 256,
}
MODELS = {"gin/models/t5_1_1_small.gin": "T5Config", "gin/models/llama_1b.gin": "LlamaConfig"}


def _parse(files):
    gin.clear_config()
    launcher.parse_gin([os.path.join(REPO, f) for f in files], [])


def _query(name, default=KeyError):
    try:
        return gin.query_parameter(name)
    except (ValueError, KeyError):
        if default is KeyError:
            raise
        return default


@pytest.fixture(autouse=True)
def _clean_gin():
    yield
    gin.clear_config()


def test_every_hardware_file_is_listed():
    on_disk = {f"gin/hardware/{f}" for f in os.listdir(os.path.join(REPO, "gin", "hardware")) if f.endswith(".gin")}
    assert on_disk == set(HARDWARE)


@pytest.mark.parametrize("model_file", sorted(MODELS))
@pytest.mark.parametrize("hardware_file", sorted(HARDWARE))
def test_hardware_file_parses_with_a_run_and_a_model(hardware_file, model_file):
    _parse(["gin/runs/default.gin", model_file, hardware_file])
    data, fsdp, model = (_query(f"make_mesh.{axis}") for axis in partitioning.MESH_AXES)
    stated = _query("%HARDWARE_DEVICES", None)
    assert stated == HARDWARE[hardware_file], f"{hardware_file}: HARDWARE_DEVICES = {stated}"
    assert fsdp >= 1 and model >= 1
    if data == -1:  # takes whatever the other axes leave: only a file for "any count" may say so
        assert stated in (None, fsdp * model) or stated % (fsdp * model) == 0
    else:
        assert data >= 1 and data * fsdp * model == stated, \
            f"{hardware_file}: mesh {data} x {fsdp} x {model} != {stated} devices"
        batch = _query("%BATCH_SIZE")
        assert batch % (data * fsdp) == 0, f"{hardware_file}: BATCH_SIZE {batch} does not split over data x fsdp"
    assert _query("%ATTENTION_IMPL") in attention.IMPLEMENTATIONS
    config = MODELS[model_file]
    dtype = _query(f"{config}.dtype")
    assert dtype in ("float32", "bfloat16")
    # The vocabulary tables split over model x fsdp (runtime/partitioning.py), so the padded vocabulary must
    # divide by it.
    assert _query(f"{config}.vocab_size") % (fsdp * model) == 0
    # The run file still supplies the rest (here: the steps of the embedded default).
    assert _query("%TRAIN_STEPS") == 800


def test_hardware_file_after_a_run_file_overrides_its_batch_and_attention():
    _parse(["gin/runs/finetune.gin", "gin/models/t5_1_1_small.gin", "gin/hardware/tpu_v5e_pod.gin"])
    assert _query("%BATCH_SIZE") == 256 and _query("%ATTENTION_IMPL") == "pallas"
    assert _query("T5Config.dtype") == "bfloat16" and _query("make_mesh.fsdp") == 16
    assert math.prod(_query(f"make_mesh.{a}") for a in partitioning.MESH_AXES) == 256


def test_the_mesh_is_built_from_the_binding_on_the_devices_here():
    """The only device-backed check: the CPU file's mesh on whatever devices this process has."""
    import jax
    _parse(["gin/runs/default.gin", "gin/hardware/cpu.gin"])
    mesh = partitioning.make_mesh()
    assert mesh.devices.size == jax.device_count() and mesh.axis_names == partitioning.MESH_AXES
