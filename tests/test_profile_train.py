"""scripts/profile_train.py's parsing: which HLO ops are convolutions or matrix products, their
JAX op names, and per-op time from a perfetto trace, on hand-written inputs."""
import gzip
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import profile_train  # noqa: E402

HLO = """\
HloModule jit_device_step, entry_computation_layout={()->f32[]}

%inner.1 (p: f32[4,4]) -> f32[4,4] {
  %p = f32[4,4]{1,0} parameter(0)
  ROOT %dot.3 = f32[4,4]{1,0} dot(%p, %p), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%fused_computation.7 (a: f32[4,4]) -> f32[4,4] {
  %a = f32[4,4]{1,0} parameter(0)
  ROOT %call.2 = f32[4,4]{1,0} call(%a), to_apply=%inner.1
}

%fused_computation.8 (b: f32[4,4]) -> f32[4,4] {
  %b = f32[4,4]{1,0} parameter(0)
  ROOT %exponential.1 = f32[4,4]{1,0} exponential(%b)
}

ENTRY %main.9 (x: f32[4,4]) -> f32[4,4] {
  %x = f32[4,4]{1,0} parameter(0)
  %ynn_fusion.7 = f32[4,4]{1,0} fusion(%x), kind=kCustom, calls=%fused_computation.7, metadata={op_name="jit(device_step)/jvp(ConvNet)/conv1/conv_general_dilated" stack_frame_id=3}
  %convolution.4 = f32[4,4]{1,0} convolution(%x, %x), dim_labels=b01f_01io->b01f, metadata={op_name="jit(device_step)/conv2/conv_general_dilated"}
  ROOT %exp_fusion.8 = f32[4,4]{1,0} fusion(%ynn_fusion.7), kind=kLoop, calls=%fused_computation.8, metadata={op_name="jit(device_step)/bn1/exp" source_file="/x/y/common.py" source_line=12}
}
"""


def test_conv_matmul_ops_follow_fusions_into_called_computations():
    ops = profile_train.conv_matmul_ops(HLO.splitlines(keepends=True))
    assert {"ynn_fusion.7", "convolution.4"} <= ops  # a fusion calling a call holding a dot; a conv
    assert "exp_fusion.8" not in ops and "exponential.1" not in ops


def test_op_sources_name_the_jax_op_and_the_line_when_recorded():
    sources = profile_train.op_sources(HLO.splitlines(keepends=True))
    assert sources["ynn_fusion.7"] == "jit(device_step)/jvp(ConvNet)/conv1/conv_general_dilated"
    assert sources["exp_fusion.8"] == "jit(device_step)/bn1/exp at common.py:12"


def test_op_times_sum_the_train_steps_ops_only(tmp_path):
    events = [{"ph": "X", "name": "a", "dur": 1500.0, "args": {"hlo_op": "ynn_fusion.7", "hlo_module": "jit_device_step"}},
              {"ph": "X", "name": "a", "dur": 500.0, "args": {"hlo_op": "ynn_fusion.7", "hlo_module": "jit_device_step"}},
              {"ph": "X", "name": "b", "dur": 9000.0, "args": {"hlo_op": "ynn_fusion.7", "hlo_module": "jit_create_state"}},
              {"ph": "X", "name": "python frame", "dur": 7000.0},
              {"ph": "i", "name": "instant", "args": {"hlo_op": "x", "hlo_module": "jit_device_step"}}]
    (tmp_path / "plugins").mkdir()
    with gzip.open(tmp_path / "plugins" / "host.trace.json.gz", "wt") as f:
        json.dump({"traceEvents": events}, f)
    assert profile_train.op_times_ms(str(tmp_path)) == {"ynn_fusion.7": 2.0}


def test_kind_totals_split_conv_matmul_from_the_rest():
    rows = [{"ms_per_step": 3.0, "kind": "conv_matmul"}, {"ms_per_step": 1.5, "kind": "other"},
            {"ms_per_step": 0.5, "kind": "other"}]
    assert profile_train.kind_totals(rows) == {"conv_matmul_ms": 3.0, "other_ms": 2.0}
