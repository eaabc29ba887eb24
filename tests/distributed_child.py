"""One process of a test's distributed run: ``python distributed_child.py HOOKS ARGS...`` runs
``python -m detrlib ARGS`` as the process the environment's RANK names, after HOOKS, a JSON object
``{"<rank>": {"clock": 1000, "nan_at": 2}}``, has given this process what a test needs: a clock
that runs ``clock`` times faster than the others', or a NaN loss at its ``nan_at``-th batch."""
import json
import os
import sys
import time
import types


def main() -> int:
    hooks = json.loads(sys.argv[1]).get(os.environ["RANK"], {})
    if "clock" in hooks:
        import detrlib.train_state

        real, speed = time.perf_counter, hooks["clock"]
        detrlib.train_state.time = types.SimpleNamespace(perf_counter=lambda: real() * speed)
    if "nan_at" in hooks:
        from detrlib.criterion import SetCriterion

        total, calls = SetCriterion.total, []

        def total_with_a_nan(self, losses):
            calls.append(1)
            loss = total(self, losses)
            return loss * float("nan") if len(calls) == hooks["nan_at"] else loss

        SetCriterion.total = total_with_a_nan
    from detrlib.cli import main as detrlib

    return detrlib(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
