"""The committed generated module is what the committed .proto gives."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from agent.north.sparkplug import sparkplug_b_pb2 as pb

HERE = Path(pb.__file__).resolve().parent


def test_regenerating_gives_the_committed_files(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{HERE}", f"--python_out={tmp_path}",
         f"--pyi_out={tmp_path}", str(HERE / "sparkplug_b.proto")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for name in ("sparkplug_b_pb2.py", "sparkplug_b_pb2.pyi"):
        assert (tmp_path / name).read_bytes() == (HERE / name).read_bytes(), name


def test_names_and_field_numbers_are_tahu_s() -> None:
    # Tahu's full names: a consumer's generated code or descriptor pool must match.
    assert pb.DESCRIPTOR.package == "org.eclipse.tahu.protobuf"
    metric = pb.Payload.Metric.DESCRIPTOR
    assert metric.full_name == "org.eclipse.tahu.protobuf.Payload.Metric"
    numbers = {f.name: f.number for f in metric.fields}
    assert numbers["is_null"] == 7
    assert numbers["properties"] == 9
    assert numbers["string_value"] == 15
    assert {f.name: f.number for f in pb.Payload.DESCRIPTOR.fields} == {
        "timestamp": 1, "metrics": 2, "seq": 3, "uuid": 4, "body": 5,
    }  # fmt: skip
    assert pb.DataType.Value("DateTimeArray") == 34
