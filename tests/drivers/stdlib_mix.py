"""A program that uses much of the standard library's C side (json, re,
collections, datetime, decimal, pickle, sqlite3, hashlib, zlib, csv,
asyncio, ElementTree, ctypes, lzma, bz2, mmap, sockets, threads...), run
watched whole (REFWATCH_MODULES=all): the interpreter's own extensions are
correct, so any finding refwatch makes here is a false one."""
import json, re, collections, datetime, decimal, pickle, sqlite3, itertools, functools, heapq, bisect, struct, array, math, random, hashlib, base64, zlib, io, csv, operator, statistics, unicodedata
random.seed(1)
out = []
for i in range(600):
    d = {"k%d" % j: [j, str(j), j * 1.5, None, {"x": j}] for j in range(10)}
    s = json.dumps(d, sort_keys=True)
    out.append(len(json.loads(s)))
    m = re.findall(r"k(\d+)", s)
    c = collections.Counter(m)
    od = collections.OrderedDict(sorted(c.items()))
    dq = collections.deque(range(20), maxlen=10)
    dt = datetime.datetime(2020, 1, 1) + datetime.timedelta(days=i)
    out.append(dt.isoformat())
    dec = decimal.Decimal(i) / decimal.Decimal(7)
    out.append(str(dec.quantize(decimal.Decimal("0.001"))))
    p = pickle.loads(pickle.dumps((d, od, dq, dt, dec)))
    h = []
    for v in random.sample(range(1000), 20): heapq.heappush(h, v)
    out.append(heapq.heappop(h))
    b = struct.pack("<iid", i, i + 1, i / 3)
    out.append(struct.unpack("<iid", b)[2])
    a = array.array("d", [x / 3 for x in range(20)])
    out.append(hashlib.sha256(a.tobytes()).hexdigest()[:8])
    out.append(base64.b64encode(zlib.compress(s.encode()))[:10])
    buf = io.StringIO(); w = csv.writer(buf); w.writerow([i, "a,b", 3.5]); out.append(buf.getvalue())
    out.append(statistics.mean([1, 2, 3, i]))
    out.append(unicodedata.name(chr(65 + i % 26)))
    out.append(list(itertools.islice(itertools.accumulate(range(10), operator.mul), 5)))
    out.append(functools.reduce(operator.add, range(i % 50), 0))
db = sqlite3.connect(":memory:")
db.execute("create table t (a, b)")
db.executemany("insert into t values (?, ?)", [(i, str(i)) for i in range(1000)])
out.append(db.execute("select sum(a), count(b) from t").fetchone())

import asyncio, xml.etree.ElementTree as ET, ctypes, threading, lzma, bz2, queue, weakref, copy, enum, dataclasses, typing, contextvars, selectors, socket, textwrap, difflib, fractions, string, time, types, abc, mmap, select
async def worker(n):
    await asyncio.sleep(0)
    return sum(range(n))
async def main():
    r = await asyncio.gather(*(worker(i) for i in range(200)))
    q = asyncio.Queue()
    for i in range(100): await q.put(i)
    while not q.empty(): out.append(await q.get())
    return r
for _ in range(5):
    out.append(sum(asyncio.run(main())))
root = ET.Element("root")
for i in range(500):
    e = ET.SubElement(root, "item", id=str(i)); e.text = "v%d" % i
s = ET.tostring(root)
out.append(len(ET.fromstring(s).findall("item")))
buf = ctypes.create_string_buffer(64); ctypes.memmove(buf, b"hello", 5); out.append(buf.value)
arr = (ctypes.c_int * 10)(*range(10)); out.append(sum(arr))
lock = threading.Lock(); results = []
def t(n):
    for i in range(2000):
        d = {i: [i, str(i)]}
        with lock: results.append(len(d))
ts = [threading.Thread(target=t, args=(i,)) for i in range(4)]
[x.start() for x in ts]; [x.join() for x in ts]
out.append(len(results))
data = json.dumps(list(range(1000))).encode()
out.append(len(lzma.decompress(lzma.compress(data)))); out.append(len(bz2.decompress(bz2.compress(data))))
class C: pass
objs = [C() for _ in range(100)]; refs = [weakref.ref(o) for o in objs]; wd = weakref.WeakValueDictionary({i: o for i, o in enumerate(objs)})
out.append(len(wd)); del objs
class Color(enum.Enum):
    RED = 1; GREEN = 2
@dataclasses.dataclass
class P:
    x: int; y: typing.List[int] = dataclasses.field(default_factory=list)
ps = [P(i, [i]) for i in range(300)]; out.append(copy.deepcopy(ps)[-1].x)
var = contextvars.ContextVar("v"); var.set(5); ctx = contextvars.copy_context(); out.append(ctx.run(var.get))
a, b = socket.socketpair(); a.sendall(b"x" * 1000); out.append(len(b.recv(2000))); a.close(); b.close()
out.append(len(difflib.unified_diff(["a\n", "b\n"], ["a\n", "c\n"]).__next__()))
out.append(fractions.Fraction(3, 7) * 7)
m = mmap.mmap(-1, 4096); m.write(b"abc"); m.seek(0); out.append(m.read(3)); m.close()
out.append(pickle.loads(pickle.dumps(collections.defaultdict(list, {"a": [1]})))["a"])
out.append(types.SimpleNamespace(a=1).a)
ns = collections.ChainMap({"a": 1}, {"b": 2}); out.append(ns["b"])
out.append(sorted(itertools.permutations(range(4)))[-1])
print(len(out), hashlib.md5(repr(out).encode()).hexdigest())
