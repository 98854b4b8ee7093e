"""A lean Kafka Fetch loop (v4, one partition): sends Fetch requests,
reads whole responses, walks batch headers for the next offset and the
record count. No record is decoded: it measures the broker and the
transport, not a client's per-record work."""
import socket, struct, sys, time

host, port = sys.argv[1].split(":")
topic = sys.argv[2].encode()
want = int(sys.argv[3])
max_bytes = int(sys.argv[4]) if len(sys.argv) > 4 else 8 << 20
s = socket.create_connection((host, int(port)))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
buf = bytearray(64 << 20)
view = memoryview(buf)

def recv_exact(n):
    got = 0
    while got < n:
        r = s.recv_into(view[got:n], n - got)
        if r == 0:
            raise EOFError
        got += r
    return view[:n]

def fetch(offset, cid):
    body = struct.pack(">iiiib", -1, 500, 1, max_bytes, 0)  # replica, max_wait, min_bytes, max_bytes, isolation
    body += struct.pack(">i", 1) + struct.pack(">h", len(topic)) + topic
    body += struct.pack(">i", 1) + struct.pack(">iqi", 0, offset, max_bytes)
    header = struct.pack(">hhih", 1, 4, cid, -1)
    msg = header + body
    s.sendall(struct.pack(">i", len(msg)) + msg)
    size = struct.unpack(">i", bytes(recv_exact(4)))[0]
    return recv_exact(size), size

offset, records, total_bytes, cid = 0, 0, 0, 0
t0 = time.time()
while records < want:
    cid += 1
    resp, size = fetch(offset, cid)
    # v4: corr(4) throttle(4) [topics: n(4) name(2+len) [parts: n(4) idx(4) err(2) hw(8) lso(8) aborted(n4 ..) records(4+..)]]
    p = 4 + 4 + 4
    nlen = struct.unpack_from(">h", resp, p)[0]; p += 2 + nlen
    p += 4  # partitions count
    p += 4  # index
    err = struct.unpack_from(">h", resp, p)[0]; p += 2
    if err:
        raise SystemExit(f"error {err}")
    p += 8 + 8
    aborted = struct.unpack_from(">i", resp, p)[0]; p += 4
    if aborted > 0:
        p += aborted * 16
    rlen = struct.unpack_from(">i", resp, p)[0]; p += 4
    end = p + rlen
    total_bytes += rlen
    while p + 61 <= end:
        base = struct.unpack_from(">q", resp, p)[0]
        blen = struct.unpack_from(">i", resp, p + 8)[0]
        if p + 12 + blen > end:
            break
        delta = struct.unpack_from(">i", resp, p + 23)[0]
        records += struct.unpack_from(">i", resp, p + 57)[0]
        offset = base + delta + 1
        p += 12 + blen
elapsed = time.time() - t0
print(f"kafka raw fetch: {records:,} records in {elapsed:.2f} s: {records/elapsed:,.0f} records/s, {total_bytes/elapsed/1e6:,.0f} MB/s")
