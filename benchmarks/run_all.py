"""`make bench`: runs every benchmark in its own process."""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BENCHMARKS = ["transfer.py", "overhead.py", "ops.py", "attention.py", "compile.py", "distributed.py",
              "fabric.py", "ternary_linear.py", "decode.py", "streams.py"]

if __name__ == "__main__":
    failed = [b for b in BENCHMARKS
              if subprocess.call([sys.executable, os.path.join(HERE, b)], cwd=HERE) != 0]
    if failed:
        sys.exit(f"benchmarks failed: {failed}")
