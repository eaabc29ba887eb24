"""What tests/ and notebooks/ share in one pytest session (`make test` collects both)."""
import os

# One OpenMP thread per process (this one, the kernels and the commands the tests start) unless the caller
# set another: on a 2-core machine doing other work, torch's two threads in a process wait on each other
# and a chapter runs several times slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")
