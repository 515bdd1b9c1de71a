#!/usr/bin/env python3
"""tikv-python (unmodified, from PyPI) against an Atoll API V1 cluster.

Run by tests/tests/api_version.rs with the PD address, after `make test`
installed tikv-python into a virtualenv. Writes keys chosen around region
bounds, splits regions at some of them through PD's HTTP API, and checks
every raw operation before and after the splits. Ends with the line
"N passed, M failed"; exits non-zero if anything failed.
"""

import json
import sys
import time
import traceback
import urllib.request

import tikv

PD = sys.argv[1]
RESULTS = []


def check(name, got, want):
    ok = got == want
    RESULTS.append(ok)
    print(("ok   " if ok else "FAIL ") + name + ("" if ok else f": got {got!r}, want {want!r}"), flush=True)


# CRC-64/XZ (ECMA-182 reflected), computed here independently of the store.
_POLY = 0xC96C5795D7870F42
_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ _POLY if _c & 1 else _c >> 1
    _TABLE.append(_c)


def crc64(data):
    crc = 0xFFFFFFFFFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFFFFFFFFFF


def local_checksum(pairs):
    x = n = size = 0
    for k, v in pairs:
        x ^= crc64(k + v)
        n += 1
        size += len(k) + len(v)
    return (x, n, size)


# Split keys: an ordinary key, one sharing its first 8 bytes with others,
# and the bytes of the API V2 keyspace boundaries (ordinary keys in V1).
SPLITS = [b"B", b"split-m", b"shared-prefix-m", b"r\0\0\0", b"r\0\0\0\0", b"r\0\0\1", b"x\0\0\0"]
# Keys equal to the split keys, just below and above them, with trailing
# zero bytes, sharing their first 8 bytes, and at the ends of the key space.
KEYS = sorted(
    set(SPLITS)
    | {
        b"\0", b"A", b"A\xff", b"B\0", b"Az",
        b"split-l", b"split-l\xff", b"split-m\0", b"split-m\0\0", b"split-m1", b"split-n",
        b"shared-prefix-a", b"shared-prefix-m\0", b"shared-prefix-z", b"shared-p",
        b"r\0\0", b"r\0\0\0\0\0", b"r\0\0\0a", b"x\0\0\0\0", b"\xff", b"\xff\xff\xff",
    }
)


def value(k, gen):
    return b"v%d-" % gen + k.hex().encode()


def pd_http(method, path, body=None):
    req = urllib.request.Request(f"http://{PD}{path}", method=method)
    data = None if body is None else json.dumps(body).encode()
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, data, timeout=10) as resp:
        return json.loads(resp.read())


def region_of(key):
    for r in pd_http("GET", "/pd/api/v1/regions")["regions"]:
        start, end = bytes.fromhex(r["start_key"]), bytes.fromhex(r["end_key"])
        if start <= key and (not end or key < end):
            return r
    return None


def split_at(key):
    """Asks PD to split so a region starts at `key`; waits until it does."""
    deadline = time.monotonic() + 30
    asked = 0.0
    while time.monotonic() < deadline:
        r = region_of(key)
        if r is not None and bytes.fromhex(r["start_key"]) == key:
            return True
        if r is not None and r.get("leader") and time.monotonic() - asked > 3:
            asked = time.monotonic()
            pd_http("POST", "/pd/api/v1/operators", {"name": "split-region", "region_id": r["id"], "keys": [key.hex()]})
        time.sleep(0.2)
    return False


def check_everything(db, atomic, phase, gen, live):
    """Every read path over `live` (key -> value), then writes at the bounds."""
    want = sorted(live.items())
    for k in KEYS:
        check(f"{phase}: get {k!r}", db.get(k), live.get(k))
    check(f"{phase}: get_many", db.get_many(KEYS), {k: v for k, v in want})
    check(f"{phase}: scan all", list(db.scan()), want)
    check(f"{phase}: reverse scan all", list(db.scan(reverse=True)), want[::-1])
    check(f"{phase}: scan_keys prefix split-m", list(db.scan_keys(prefix=b"split-m")),
          [k for k, _ in want if k.startswith(b"split-m")])
    check(f"{phase}: reverse scan from split-m, limit 3", list(db.scan(end=b"split-m", reverse=True, limit=3)),
          [p for p in want if p[0] < b"split-m"][::-1][:3])
    check(f"{phase}: scan [B, split-m\\0)", list(db.scan(b"B", b"split-m\0")),
          [p for p in want if b"B" <= p[0] < b"split-m\0"])
    check(f"{phase}: scan [r000, r001) limit 2", list(db.scan(b"r\0\0\0", b"r\0\0\1", limit=2)),
          [p for p in want if b"r\0\0\0" <= p[0] < b"r\0\0\1"][:2])
    check(f"{phase}: checksum all", tuple(db.checksum()), local_checksum(want))
    check(f"{phase}: checksum prefix r", tuple(db.checksum(prefix=b"r")),
          local_checksum([p for p in want if p[0].startswith(b"r")]))

    # Overwrite every key equal to a split key, then read them back.
    db.put_many({k: value(k, gen) for k in SPLITS})
    live.update({k: value(k, gen) for k in SPLITS})
    check(f"{phase}: get_many after overwrite", db.get_many(SPLITS), {k: live[k] for k in SPLITS})

    # TTL on a bound key and on a key sharing its first 8 bytes.
    db.put(b"split-m", b"ttl", ttl=600)
    live[b"split-m"] = b"ttl"
    ttl = db.ttl(b"split-m")
    check(f"{phase}: ttl of split-m within (590, 600]", 590 < (ttl or 0) <= 600, True)
    check(f"{phase}: ttl of a key without one", db.ttl(b"shared-prefix-a"), None)

    # Compare-and-swap in atomic mode, on a bound key.
    swapped, prev = atomic.compare_and_swap(b"r\0\0\0", live[b"r\0\0\0"], b"cas-%d" % gen)
    check(f"{phase}: cas on r\\0\\0\\0 swaps", (swapped, prev), (True, live[b"r\0\0\0"]))
    live[b"r\0\0\0"] = b"cas-%d" % gen
    swapped, prev = atomic.compare_and_swap(b"r\0\0\0", b"stale", b"never")
    check(f"{phase}: cas with a stale value fails", (swapped, prev), (False, live[b"r\0\0\0"]))


def main():
    db = tikv.RawClient(PD, timeout=30)
    atomic = tikv.RawClient(PD, timeout=30, atomic=True)
    live = {k: value(k, 0) for k in KEYS}
    db.put_many(live)
    check_everything(db, atomic, "before splits", 1, live)

    for k in SPLITS:
        check(f"split at {k!r}", split_at(k), True)

    check_everything(db, atomic, "after splits", 2, live)

    # Deletes across bounds: one key, a batch, and a range spanning a split.
    db.delete(b"B")
    live.pop(b"B")
    db.delete_many([b"r\0\0\0", b"x\0\0\0"])
    live.pop(b"r\0\0\0")
    live.pop(b"x\0\0\0")
    db.delete_range(b"split-l", b"split-n")
    for k in [k for k in live if b"split-l" <= k < b"split-n"]:
        live.pop(k)
    check("after deletes: scan all", list(db.scan()), sorted(live.items()))
    check("after deletes: split-n survives", db.get(b"split-n"), live[b"split-n"])
    check("after deletes: checksum all", tuple(db.checksum()), local_checksum(sorted(live.items())))
    db.delete_range(b"")
    check("after delete_range(b''): nothing left", list(db.scan()), [])
    db.close()
    atomic.close()


if __name__ == "__main__":
    try:
        main()
    except Exception:
        traceback.print_exc()
        RESULTS.append(False)
        print("FAIL an operation raised", flush=True)
    passed = sum(RESULTS)
    failed = len(RESULTS) - passed
    print(f"tikv-python: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
