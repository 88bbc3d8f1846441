"""`with torch_tfmbs.profiler() as prof:` records one row per tfmbs op (fabric
ops with their counters, host ops run by the CPU fallback) and prints a
table like torch.profiler's key_averages().table(). A fabric op's wall time
splits into the engine's run ("engine_ns") and the host's glue around it
(operands, activation quantization, epilogue, output)."""
import collections

from . import _C


class profiler:
    def __init__(self):
        self.rows = []

    def __enter__(self):
        # Rows of this thread from now on: not earlier ops, not other threads'.
        self._session = _C.profiler_start()
        return self

    def __exit__(self, *exc):
        self.rows = _C.profiler_stop(self._session)
        return False

    def key_averages(self, group_by_shapes=False):
        """Rows summed per op (and per input shapes if asked), most time first."""
        groups = collections.OrderedDict()
        for row in self.rows:
            key = (row["op"], row["engine"], row["shapes"] if group_by_shapes else "")
            g = groups.setdefault(key, {"op": row["op"], "engine": row["engine"],
                                        "shapes": key[2], "calls": 0, "wall_ns": 0, "engine_ns": 0, "cycles": 0,
                                        "utilization": 0, "skips": 0, "bytes": 0})
            g["calls"] += 1
            g["wall_ns"] += row["wall_ns"]
            g["engine_ns"] += row["engine_ns"]
            g["cycles"] += row["cycles"]
            g["utilization"] += row["utilization"]
            g["skips"] += sum(sum(t["skips"]) for t in row["tiles"])
            g["bytes"] += row["bytes"]
        return sorted(groups.values(), key=lambda g: -g["wall_ns"])

    def table(self, group_by_shapes=False, row_limit=20):
        header = (f"{'op':<36} {'engine':<12} {'calls':>6} {'wall ms':>9} {'engine ms':>9} {'cycles':>12} "
                  f"{'MACs':>12} {'skips':>12} {'MiB':>8}")
        if group_by_shapes:
            header += "  shapes"
        lines = [header, "-" * len(header)]
        for g in self.key_averages(group_by_shapes)[:row_limit]:
            line = (f"{g['op'][:36]:<36} {g['engine']:<12} {g['calls']:>6} "
                    f"{g['wall_ns'] / 1e6:>9.3f} {g['engine_ns'] / 1e6:>9.3f} {g['cycles']:>12} {g['utilization']:>12} "
                    f"{g['skips']:>12} {g['bytes'] / 2**20:>8.2f}")
            if group_by_shapes:
                line += "  " + g["shapes"]
            lines.append(line)
        return "\n".join(lines)
