"""The chapters' timing loops at toy size, for tests that run a chapter in the gpu profile on a CPU.

A chapter times its models with as many calls, and on images as large, as a real GPU makes worth
reading (DETR-R50 at 800 pixels, 30 or 50 turns); ``DETRLIB_SET`` cannot reach those numbers, and on
a CPU they are minutes of a test that checks only that the cells run. :func:`install`, in a kernel's
``sitecustomize``, caps every turn-taking measurement (``detrlib.bench.take_turns`` and its kin) and
every inference job: the same cells and code paths run, a few calls each, on toy-size images.
"""
MAX_TURNS, MAX_WARMUP, MAX_SIZE = 2, 1, 64


def install() -> None:
    import detrlib.bench
    import detrlib.bench.infer

    take_turns, inference_job = detrlib.bench.take_turns_quiet_and_busy, detrlib.bench.infer.inference_job

    def few_turns(jobs, repeats, busy, warmup=1, *args, **kwargs):
        return take_turns(jobs, min(repeats, MAX_TURNS), busy, min(warmup, MAX_WARMUP), *args, **kwargs)

    def toy_size_job(model, size, *args, **kwargs):
        return inference_job(model, min(size, MAX_SIZE), *args, **kwargs)

    detrlib.bench.take_turns_quiet_and_busy = few_turns  # take_turns calls it
    detrlib.bench.infer.inference_job = toy_size_job
