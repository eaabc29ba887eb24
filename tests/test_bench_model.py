"""``python -m detrlib bench model`` runs and returns its rows (speed itself is not tested)."""
import argparse

from detrlib.bench import load_all


def test_model_benchmark_returns_a_row_per_job():
    entry = load_all()["model"]
    parser = argparse.ArgumentParser()
    entry.add_arguments(parser)
    args = parser.parse_args(["--sizes", "64", "--repeats", "1", "--batch", "1", "--no-hf"])
    rows = entry.run(args)
    assert [r["job"] for r in rows] == ["forward b1 64²", "fwd+bwd b1 64²", "inference s/img 64²"]
    assert all(r["detrlib s"] > 0 and "HF s" not in r for r in rows)
