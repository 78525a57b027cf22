"""`python -m skuflow.bench.faststream_flow inventory|catalog|users`: the raw flow's service on FastStream's bus."""

from __future__ import annotations

import sys

from skuflow.bench.faststream_flow.bus import faststream_bus
from skuflow.bench.raw.__main__ import main

if __name__ == "__main__":
    sys.exit(main(sys.argv, faststream_bus, "skuflow.bench.faststream_flow"))
