"""Benchmark workloads, run as `python workloads.py NAME`. Each imports what
it uses first (as users do), then prints `BENCH_SECONDS=<s>`, the seconds its
timed part took (start-up and imports excluded), and `BENCH_HWM_KIB=<k>`, its
peak RSS so far (before anything runs at exit). REFWATCH_BENCH_SCALE (default
1) scales the iteration counts; 0 runs only the imports (the start-up
baseline subtracted from instruction counts)."""
import importlib
import os
import sys
import time

SCALE = float(os.environ.get("REFWATCH_BENCH_SCALE", "1"))
LOOP_CALLS = 3_000_000  # benchloop.work calls (loop; threads share them out)
PYTHON_STEPS = 1_500_000  # Python-level operations (pure, mixed)
CODEC_EVERY = 100  # mixed: one C codec round trip every this many operations
CODEC_ROUNDS = 30_000  # ujson round trips of a document of a few KB
CALL_PAIRS = 20_000_000  # explicit Py_IncRef + Py_DecRef pairs
PARSE_CALLS = 2_000_000  # benchloop.parse_args calls (methods)
STORE_CALLS = 1_000_000  # stores: iterations (a keep call, a Holder made, its setter)
STORE_CLEAR_EVERY = 1000  # stores: benchloop.kept cleared from Python every this many
LIVE_OBJECTS = 1_000_000  # live1m: fresh ints kept alive (not scaled)
THREADS = 4
KEPT = []  # live1m's objects, alive until exit


def scaled(n):
    return int(n * SCALE)


def user(i):
    """One record of a realistic document: nested dicts, lists, strings,
    numbers, a bool, a null, a string with escapes and non-ASCII."""
    return {
        "id": 1000 + i,
        "name": f"User Name {i}",
        "email": f"user{i}@example.com",
        "active": i % 3 != 0,
        "score": 12.5 + i * 0.37,
        "balance": -1234 + i * 17,
        "tags": ["alpha", "beta", "gamma"][: 1 + i % 3],
        "address": {"street": f"{i} Main Street", "city": "Springfield", "zip": f"{10000 + i}",
                    "geo": [40.7128 + i / 1000, -74.006]},
        "note": 'line one\nline "two" caf\u00e9',
        "parent": None,
    }


def document(users):
    return {"page": 1, "total": users, "generated": "2024-05-01T12:00:00Z",
            "users": [user(i) for i in range(users)]}


def python_step(i, data):
    """One Python-level operation on dicts and lists, strings, a little
    arithmetic; every 1000th also sums and empties the batch."""
    data.append({"id": i, "name": "item%d" % i, "tags": [i % 7, i % 11]})
    if len(data) < 1000:
        return 0
    total = sum(x["tags"][0] for x in data if x["id"] % 3)
    data.clear()
    return total


def pure_python():
    data = []
    total = 0
    for i in range(scaled(PYTHON_STEPS)):
        total += python_step(i, data)
    return total


def mixed():
    import benchcodec
    doc = document(1)
    data = []
    total = 0
    for i in range(scaled(PYTHON_STEPS)):
        total += python_step(i, data)
        if i % CODEC_EVERY == 0:
            total += len(benchcodec.loads(benchcodec.dumps(doc)))
    return total


def work_calls(n):
    import benchloop
    for i in range(n):
        benchloop.work(i)


def refcount_loop():
    work_calls(scaled(LOOP_CALLS))


def leaky_loop():
    import benchloop
    for i in range(scaled(LOOP_CALLS)):
        benchloop.work_leaky(i + 1000)


def threads():
    import threading
    workers = [threading.Thread(target=work_calls, args=(scaled(LOOP_CALLS) // THREADS,)) for _ in range(THREADS)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def ujson_codec():
    import ujson
    doc = document(12)
    for _ in range(scaled(CODEC_ROUNDS)):
        ujson.loads(ujson.dumps(doc))


def parsing_methods():
    import benchloop
    seq = [1, 2, 3]
    for i in range(scaled(PARSE_CALLS)):
        benchloop.parse_args(seq, i)


def calls():
    import benchloop
    benchloop.calls([], scaled(CALL_PAIRS))


def stores():
    """Objects made by Python stored by the extension: appended to its
    module-level list by a METH_O method, and held by a type's member,
    set by its tp_init and by its getset setter."""
    import benchloop
    kept, keep, holder = benchloop.kept, benchloop.keep, benchloop.Holder
    for i in range(scaled(STORE_CALLS)):
        value = i + 1000
        keep(value)
        h = holder(value)
        h.value = (i, value)
        if i % STORE_CLEAR_EVERY == 0:
            kept.clear()


def live_objects():
    import benchloop
    KEPT.append(benchloop.fresh_ints(LIVE_OBJECTS))


# name: (function, modules imported before timing)
WORKLOADS = {
    "pure": (pure_python, ()),
    "mixed": (mixed, ("benchcodec",)),
    "loop": (refcount_loop, ("benchloop",)),
    "ujson": (ujson_codec, ("ujson",)),
    "threads": (threads, ("benchloop", "threading")),
    "methods": (parsing_methods, ("benchloop",)),
    "calls": (calls, ("benchloop",)),
    "stores": (stores, ("benchloop",)),
    "live1m": (live_objects, ("benchloop",)),
    "leaky": (leaky_loop, ("benchloop",)),
}

def peak_rss_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


if __name__ == "__main__":
    fn, modules = WORKLOADS[sys.argv[1]]
    for name in modules:
        importlib.import_module(name)
    t = time.perf_counter()
    fn()
    print(f"BENCH_SECONDS={time.perf_counter() - t:.6f}")
    print(f"BENCH_HWM_KIB={peak_rss_kib()}")
