"""Writes trials into a run store as fast as it can (killed with SIGKILL by test_store.py)."""
import sys

from rlinit_lib.core.store import RunStore

store = RunStore(sys.argv[1], "writer", {"n": 1})
i = len(store.finished())
while True:
    # 200 rows per trial: a transaction long enough to be killed in the middle of it
    store.put(f"t{i}", {"rows": [{"trial": i, "j": j, "x": j * 0.5} for j in range(200)]}, units=[f"t{i}", f"u{i}"])
    print(i, flush=True)     # committed: the test counts these lines, then kills this process mid-way through more
    i += 1
