"""A tsbench run in its own process, for the fault tests: waits for a start signal, prints its summary as JSON.

Usage: python run_driver.py SPEC STORE [GO_FILE]; with $STARTED_FILE set, that file is created right before the run
starts (after the imports), so a test can kill the run at a chosen time into its work.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")


def main() -> None:
    import torch

    torch.set_num_threads(1)
    from tsbench_core.runner import LeasePolicy, run
    from tsbench_core.spec import load_spec

    spec_path, store = sys.argv[1], sys.argv[2]
    spec = load_spec(spec_path)
    if len(sys.argv) > 3:  # start together with the other drivers
        go = Path(sys.argv[3])
        Path(f"{go}.ready.{os.getpid()}").touch()
        while not go.exists():
            time.sleep(0.01)
    if os.environ.get("STARTED_FILE"):
        Path(os.environ["STARTED_FILE"]).touch()
    summary = run(spec, store, leases=LeasePolicy(heartbeat_s=0.5, grace_s=5.0, poll_s=0.1))
    print(json.dumps({"pid": os.getpid(), "computed": summary.computed, "elsewhere": summary.elsewhere,
                      "cached": summary.cached, "statuses": dict(summary.statuses)}))


if __name__ == "__main__":
    main()
