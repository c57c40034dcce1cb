"""Sharding on 8 fake CPU devices: the Pallas kernel under shard_map equals the XLA path (forward
and gradients), data x fsdp x model training equals 1 device with per-device parameter memory cut
as the shards say, and a checkpoint moves between meshes (4x2 -> 1 device -> 2x4) bit for bit.

Each multi-device check runs in a subprocess started with
XLA_FLAGS=--xla_force_host_platform_device_count=8, which must be set before jax starts.
"""
import json
import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import numpy as np

from flan_mix.runtime import checkpoints, partitioning

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REMAT_WARNING = "Involuntary full rematerialization"


def run_on_eight_devices(script: str, *args: str, timeout: int = 600):
    """Runs `script` on 8 fake CPU devices; returns (its last stdout line as JSON, its stderr)."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    prelude = ("import sys, warnings\n"
               f"sys.path.insert(0, {REPO!r})\n"
               # The trainer and the infer code enter meshes as `with mesh:`, deprecated in newer jax.
               "warnings.filterwarnings('ignore', category=DeprecationWarning)\n"
               "import jax\n"
               "assert jax.device_count() == 8, jax.devices()\n")
    proc = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(script), *args], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


# ----- the Pallas kernel under shard_map -----

KERNEL_SCRIPT = """
import json
import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from flan_mix.kernels import flash_attention
from flan_mix.models.attention import attention
from flan_mix.runtime import partitioning

mesh = partitioning.make_mesh(data=2, fsdp=2, model=2)
rules = partitioning.logical_axis_rules()
rng = np.random.default_rng(0)
normal = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)

# The shapes the kernel itself sees (per device under shard_map).
kernel_shapes = []
original = flash_attention.flash_attention
def recording(q, k, v, **kw):
    kernel_shapes.append([list(q.shape), list(k.shape)])
    return original(q, k, v, **kw)
flash_attention.flash_attention = recording

def segments(batch, length, cut, pad_from):
    seg = np.ones((batch, length), np.int32)
    seg[:, cut:] = 2
    seg[1, pad_from:] = 0  # a padded row tail
    return jnp.asarray(seg)

def compare(name, args, call, context):
    # loss = sum(o * cos(o)): a cotangent that varies over every output element.
    def loss(impl):
        def f(*diff):
            o = call(*diff, impl)
            return jnp.sum(o * jnp.cos(o)), o
        return jax.jit(jax.value_and_grad(f, argnums=tuple(range(len(args))), has_aux=True))
    results = {}
    for impl in ("xla", "pallas"):
        with context():
            (_, out), grads = loss(impl)(*args)
        results[impl] = [out, *grads]
    diffs = [float(jnp.max(jnp.abs(a - b))) for a, b in zip(results["xla"], results["pallas"])]
    scale = [float(jnp.max(jnp.abs(a))) for a in results["xla"]]
    report[name] = {"diffs": diffs, "scale": scale, "kernel_shapes": kernel_shapes[-1]}

def legacy():  # how the trainer enters the mesh today
    import contextlib
    stack = contextlib.ExitStack()
    stack.enter_context(mesh)
    stack.enter_context(nn.logical_axis_rules(rules))
    return stack

report = {}
# T5 style: bidirectional self-attention with segments and the relative-position bias table.
B, L, H, D = 4, 16, 2, 8
seg = segments(B, L, 9, 13)
compare("t5_self", (normal(B, L, H, D), normal(B, L, H, D), normal(B, L, H, D), normal(H, 32)),
        lambda q, k, v, table, impl: attention(q, k, v, q_segment_ids=seg, kv_segment_ids=seg,
                                               bias_table=table, implementation=impl), legacy)
# T5 cross-attention: Lq != Lk, segments, no bias; under jax.set_mesh and no rules (defaults).
qseg, kvseg = segments(B, 8, 5, 7), seg
compare("t5_cross", (normal(B, 8, H, D), normal(B, L, H, D), normal(B, L, H, D)),
        lambda q, k, v, impl: attention(q, k, v, q_segment_ids=qseg, kv_segment_ids=kvseg,
                                        implementation=impl), lambda: jax.set_mesh(mesh))
# Decoder style: causal, GQA (4 query heads on 2 kv heads), packed prefix-LM rows.
Hq, Hkv = 4, 2
prefix = np.zeros((B, L), np.int32)
prefix[:, :4] = 1
prefix[:, 9:12] = 1
prefix = jnp.asarray(prefix)
compare("decoder_gqa_prefix", (normal(B, L, Hq, D), normal(B, L, Hkv, D), normal(B, L, Hkv, D)),
        lambda q, k, v, impl: attention(q, k, v, q_segment_ids=seg, kv_segment_ids=seg, causal=True,
                                        prefix=prefix, implementation=impl), legacy)
# A batch of 2 rows on data=2 x fsdp=2: split over data only, each row computed twice over fsdp.
seg2 = seg[:2]
compare("batch_2", (normal(2, L, H, D), normal(2, L, H, D), normal(2, L, H, D), normal(H, 32)),
        lambda q, k, v, table, impl: attention(q, k, v, q_segment_ids=seg2, kv_segment_ids=seg2,
                                               bias_table=table, implementation=impl), legacy)
# One kv head cannot be split over model=2.
try:
    with legacy():
        jax.jit(lambda q, k: attention(q, k, k, causal=True, implementation="pallas"))(
            normal(B, L, 2, D), normal(B, L, 1, D))
    report["error"] = None
except ValueError as e:
    report["error"] = str(e)
print(json.dumps(report))
"""


def test_pallas_under_shard_map_matches_xla():
    report, _ = run_on_eight_devices(KERNEL_SCRIPT)
    expected_shapes = {  # per device: batch / (data x fsdp), heads / model
        "t5_self": [[1, 16, 1, 8], [1, 16, 1, 8]],
        "t5_cross": [[1, 8, 1, 8], [1, 16, 1, 8]],
        "decoder_gqa_prefix": [[1, 16, 2, 8], [1, 16, 1, 8]],
        "batch_2": [[1, 16, 1, 8], [1, 16, 1, 8]],
    }
    for name, shapes in expected_shapes.items():
        case = report[name]
        assert case["kernel_shapes"] == shapes, (name, case)
        # [output, dq, dk, dv(, d bias table)]: f32, differing only in summation order.
        for diff, scale in zip(case["diffs"], case["scale"]):
            assert diff <= 2e-5 * max(scale, 1.0), (name, case)
    assert len(report["t5_self"]["diffs"]) == 5  # the bias-table gradient was compared
    assert report["error"] and "1 kv heads" in report["error"] and "make_mesh.model" in report["error"]


TRAIN_SCRIPT = """
import json
import numpy as np
from flan_mix.runtime import partitioning
from tests.helpers import packed_batch
from tests.test_sharding import make_trainer
from tests.test_trainer import run_steps

mesh = partitioning.make_mesh(data=2, fsdp=2, model=2)
batches = [packed_batch(np.random.default_rng(i), batch=4, enc_len=16, dec_len=8) for i in range(2)]
print(json.dumps({impl: run_steps(make_trainer(mesh, attention_impl=impl, num_encoder_layers=1,
                                               num_decoder_layers=1), batches)[1]
                  for impl in ("xla", "pallas")}))
"""


def test_t5_trains_on_the_pallas_kernel_on_a_mesh():
    """Two T5 train steps with ATTENTION_IMPL='pallas' on data=2 x fsdp=2 x model=2 equal 'xla'."""
    losses, _ = run_on_eight_devices(TRAIN_SCRIPT)
    np.testing.assert_allclose(losses["pallas"], losses["xla"], rtol=1e-5)
    assert losses["xla"][1] != losses["xla"][0]


# ----- FSDP x tensor parallelism -----

FSDP_SCRIPT = """
import json, math
import flax.linen as nn
import numpy as np
from flan_mix.runtime import partitioning
from tests.helpers import packed_batch
from tests.test_sharding import make_trainer

batches = [packed_batch(np.random.default_rng(i), batch=8) for i in range(2)]
nbytes = lambda leaves: sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in leaves)

def measure(mesh):
    trainer = make_trainer(mesh)
    abstract, shardings = trainer.abstract_state()
    batch_sharding = partitioning.batch_sharding(mesh)
    batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_sharding)
             for k, v in batches[0].items() if k in trainer.model.FEATURES}
    step = trainer.compile_train_step(shardings, dropout=False)
    with mesh, nn.logical_axis_rules(trainer.rules):
        compiled = step.lower(abstract, batch).compile()  # one compile: measured, then run
    memory = compiled.memory_analysis()
    state, losses = trainer.init_state(0), []
    for b in batches:
        state, metrics = trainer.run_step(compiled, state, b)
        losses.append(float(metrics["loss"]))
    params = jax.tree_util.tree_leaves(abstract.params)
    return {"losses": losses, "argument_bytes": int(memory.argument_size_in_bytes),
            "state_bytes": nbytes(jax.tree_util.tree_leaves(abstract)),
            "param_bytes": nbytes(params),
            "param_bytes_unsharded": sum(math.prod(x.shape) * x.dtype.itemsize for x in params),
            "batch_bytes": nbytes(batch.values())}

print(json.dumps({"one": measure(partitioning.make_mesh(devices=jax.devices()[:1])),
                  "d2f2m2": measure(partitioning.make_mesh(data=2, fsdp=2, model=2))}))
"""


def test_fsdp_and_tensor_parallel_match_one_device():
    result, stderr = run_on_eight_devices(FSDP_SCRIPT)
    one, sharded = result["one"], result["d2f2m2"]
    np.testing.assert_allclose(sharded["losses"], one["losses"], rtol=2e-5)
    # The vocabulary tables take fsdp on vocab (partitioning.py): no activation is replicated to
    # meet an embed-on-fsdp weight.
    assert REMAT_WARNING not in stderr, stderr[stderr.find(REMAT_WARNING) - 300:][:1500]
    # The shards: nearly every parameter is split fsdp x model = 4 ways (1-D norm scales 2 ways,
    # the relative-position tables over heads 2 ways), so a device holds about a quarter.
    assert one["param_bytes"] == one["param_bytes_unsharded"]
    ratio = sharded["param_bytes"] / one["param_bytes"]
    assert 0.25 <= ratio < 0.26, ratio
    # The compiled step takes what the shardings say: the state's shards plus (at most) the
    # device's slice of the batch (jit drops the features the model does not read).
    for r in (one, sharded):
        assert r["state_bytes"] <= r["argument_bytes"] <= r["state_bytes"] + r["batch_bytes"], r
    assert sharded["argument_bytes"] < 0.26 * one["argument_bytes"], (sharded, one)


def test_vocab_tables_take_fsdp_on_vocab():
    rules = partitioning.logical_axis_rules()
    spec = lambda names: tuple(nn.logical_to_mesh_axes(names, rules))
    assert spec(("vocab", "embed")) == (("model", "fsdp"), None)  # token embedding
    assert spec(("embed", "vocab")) == (None, ("model", "fsdp"))  # logits projection
    assert spec(("batch", "length", "vocab")) == (("data", "fsdp"), None, "model")  # logits
    assert spec(("embed", "mlp")) == ("fsdp", "model")
    assert spec(("batch", "length", "embed")) == (("data", "fsdp"), None, None)


# ----- a checkpoint moves between meshes -----

CKPT_MODEL = dict(num_heads=4, head_dim=8)  # 4 heads: they split over model=4 too

SAVE_SCRIPT = """
import json, sys
import numpy as np
from flan_mix.runtime import checkpoints, partitioning
from tests.helpers import packed_batch
from tests.test_sharding import ckpt_trainer, flat
from tests.test_trainer import run_steps

model_dir, out = sys.argv[1], sys.argv[2]
trainer = ckpt_trainer(partitioning.make_mesh(data=4, model=2))
state, _ = run_steps(trainer, [packed_batch(np.random.default_rng(i), batch=8) for i in range(2)])
ckpt = checkpoints.Checkpointer(model_dir, save_every_steps=1)
assert ckpt.save(state, force=True)
ckpt.close()
np.savez(out, **flat(state))
kernel = state.params["encoder"]["layer_0"]["mlp"]["wi_0"]["kernel"]
print(json.dumps({"spec": str(kernel.sharding.spec)}))
"""

RESTORE_SCRIPT = """
import json, sys
import numpy as np
from flan_mix.runtime import checkpoints, partitioning
from tests.test_sharding import ckpt_trainer, flat

model_dirs, expected = sys.argv[1:-1], np.load(sys.argv[-1])
trainer = ckpt_trainer(partitioning.make_mesh(data=2, model=4))
abstract, _ = trainer.abstract_state()
report = {}
for model_dir in model_dirs:
    ckpt = checkpoints.Checkpointer(model_dir)
    state = ckpt.restore_latest(abstract)
    ckpt.close()
    params = checkpoints.restore_params(model_dir, model=trainer.model, mesh=trainer.mesh)
    got = flat(state)
    same = sorted(got) == sorted(expected.files)
    same = same and all(np.array_equal(got[k], expected[k]) for k in expected.files)
    same = same and all(np.array_equal(v, expected[".params" + k]) for k, v in flat(params).items())
    kernel = state.params["encoder"]["layer_0"]["mlp"]["wi_0"]["kernel"]
    report[model_dir] = {"identical": bool(same), "spec": str(kernel.sharding.spec),
                         "shard_shape": list(kernel.addressable_shards[0].data.shape),
                         "global_shape": list(kernel.shape)}
print(json.dumps(report))
"""


def make_trainer(mesh, **model_overrides):
    """tests.test_trainer's tiny T5 and Adafactor, with any T5Config field overridden."""
    from flan_mix.train import optim
    from flan_mix.train.trainer import Trainer
    from tests.test_trainer import tiny
    tx, schedule = optim.make_optimizer("adafactor", optim.make_schedule("constant", 1e-2, warmup_steps=0))
    return Trainer(tiny(**model_overrides), tx, mesh, partitioning.logical_axis_rules(), schedule=schedule)


def ckpt_trainer(mesh):
    return make_trainer(mesh, **CKPT_MODEL)


def flat(tree) -> dict[str, np.ndarray]:
    """Every leaf as a host array, keyed by its path (np.savez-able)."""
    return {jax.tree_util.keystr(p).replace("'", ""): np.asarray(jax.device_get(x))
            for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def test_checkpoint_moves_between_meshes(tmp_path):
    """Saved on data=4 x model=2, restored on 1 device and saved again, restored on data=2 x model=4
    (from both checkpoints): step, params and optimizer state identical, bit for bit."""
    on_4x2, on_1, expected = str(tmp_path / "on_4x2"), str(tmp_path / "on_1"), str(tmp_path / "state.npz")
    saved, _ = run_on_eight_devices(SAVE_SCRIPT, on_4x2, expected)
    assert "model" in saved["spec"]
    want = dict(np.load(expected))

    trainer = ckpt_trainer(partitioning.make_mesh(devices=jax.devices()[:1]))
    abstract, _ = trainer.abstract_state()
    ckpt = checkpoints.Checkpointer(on_4x2)
    state = ckpt.restore_latest(abstract)
    ckpt.close()
    got = flat(state)
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)
    assert int(state.step) == 2
    params = checkpoints.restore_params(on_4x2, model=trainer.model, mesh=trainer.mesh)
    for key, value in flat(params).items():
        np.testing.assert_array_equal(value, want[".params" + key], err_msg=key)
    ckpt = checkpoints.Checkpointer(on_1, save_every_steps=1)
    assert ckpt.save(state, force=True)
    ckpt.close()

    restored, _ = run_on_eight_devices(RESTORE_SCRIPT, on_4x2, on_1, expected)
    for model_dir in (on_4x2, on_1):
        r = restored[model_dir]
        assert r["identical"], (model_dir, r)
        # wi_0 [embed, mlp]: embed over fsdp (1 here), mlp over model=4.
        assert r["global_shape"] == [32, 64] and r["shard_shape"] == [32, 16], r
