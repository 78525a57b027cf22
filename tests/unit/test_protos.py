"""The checked-in code of the auth contract is exactly what grpcio-tools generates from the `.proto`."""

from __future__ import annotations

import shutil
from pathlib import Path

from skuflow.auth.generate import PROTO, generate

SOURCE = Path(__file__).parents[2] / "src"


def test_the_generated_auth_code_is_what_the_proto_generates(tmp_path: Path):
    scratch = tmp_path / PROTO
    scratch.parent.mkdir(parents=True)
    shutil.copy(SOURCE / PROTO, scratch)

    written = generate(tmp_path)

    assert written, "nothing was generated"
    for path in written:
        checked_in = SOURCE / path.relative_to(tmp_path)
        assert checked_in.read_text() == path.read_text(), f"{checked_in} is stale: run scripts/protos.sh"
