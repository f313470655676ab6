"""Benchmark workloads, run as `python workloads.py NAME`; each prints the
seconds its timed part took (start-up excluded)."""
import sys
import time


def pure_python():
    # Dicts, lists, strings, a little arithmetic: no watched extension.
    data = []
    total = 0
    for i in range(1_500_000):
        d = {"id": i, "name": "item%d" % i, "tags": [i % 7, i % 11]}
        data.append(d)
        if len(data) >= 1000:
            total += sum(x["tags"][0] for x in data if x["id"] % 3)
            data = []
    return total


def refcount_loop():
    import benchloop
    for i in range(3_000_000):
        benchloop.work(i)


def calls():
    import benchloop
    benchloop.calls([], 20_000_000)


WORKLOADS = {"pure": pure_python, "loop": refcount_loop, "calls": calls}

if __name__ == "__main__":
    fn = WORKLOADS[sys.argv[1]]
    if sys.argv[1] != "pure":
        import benchloop  # noqa: F401 - loaded before timing, as users import
    t = time.perf_counter()
    fn()
    print(f"{time.perf_counter() - t:.6f}")
