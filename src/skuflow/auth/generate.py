"""Generate the Python code of the auth contract from `v1/auth.proto` with grpcio-tools (a dev dependency).

`python -m skuflow.auth.generate ROOT` writes `auth_pb2.py`, `auth_pb2.pyi` and `auth_pb2_grpc.py` beside the
`.proto` under ROOT (the `src` folder); the test of the checked-in files generates into a scratch copy and
compares.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO = Path("skuflow/auth/v1/auth.proto")  # relative to the source root: its path is its import path


def generate(root: Path) -> list[Path]:
    """Write the generated files beside ROOT/PROTO; the paths written."""
    try:
        from grpc_tools import protoc
    except ImportError:
        raise SystemExit("grpcio-tools is not installed: pip install -e '.[dev]'") from None
    include = Path(protoc.__file__).parent / "_proto"  # the well-known types grpcio-tools ships
    status = protoc.main(
        [
            "protoc",
            f"-I{root}",
            f"-I{include}",
            f"--python_out={root}",
            f"--pyi_out={root}",
            f"--grpc_python_out={root}",
            str(root / PROTO),
        ]
    )
    if status != 0:
        raise SystemExit(f"protoc failed ({status}) on {root / PROTO}")
    folder = (root / PROTO).parent
    return [folder / name for name in ("auth_pb2.py", "auth_pb2.pyi", "auth_pb2_grpc.py")]


if __name__ == "__main__":
    for path in generate(Path(sys.argv[1] if len(sys.argv) > 1 else "src")):
        print(path)
