"""Python interop test of the Numbers Station wire contract.

Run by run.sh, which generates `numbersstation.v1` with grpcio-tools into
PYTHONPATH. Starts the real `station server` (path in argv[1]) on a free
loopback port, then, as a plain grpcio client would:

- opens a session, drops the stream mid-way, resumes it with its token and
  next_index, and verifies the final checksum with zlib.crc32 over the
  values as big-endian u32s;
- checks rejections and their google.rpc.ErrorInfo reasons;
- checks that a full server sends RetryInfo and grpc-retry-pushback-ms.

Prints one line per check, then `N passed, N failed`; exits non-zero on
any failure. Every call has a deadline and every server is stopped.
"""

import numbers  # The standard library's: the proto package no longer collides.
import os
import queue
import subprocess
import sys
import threading
import uuid
import zlib

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from numbersstation.v1 import station_pb2 as pb
from numbersstation.v1 import station_pb2_grpc as pb_grpc

DOMAIN = "numbersstation.v1"
DEADLINE = 30.0  # seconds, for any one call

RESULTS = []


def check(name, ok, detail=""):
    RESULTS.append(ok)
    print(("PASS " if ok else "FAIL ") + name + (f": {detail}" if detail and not ok else ""), flush=True)
    return ok


class Server:
    """A `station server` on a free loopback port (it prints the port)."""

    def __init__(self, binary, *flags):
        self.proc = subprocess.Popen(
            [binary, "server", "--port", "0", *flags],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        lines = queue.Queue()
        threading.Thread(target=lambda: lines.put(self.proc.stdout.readline()), daemon=True).start()
        try:
            line = lines.get(timeout=30)
        except queue.Empty:
            line = ""
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"server did not start: {line!r}")
        self.addr = line.split()[-1]
        self.channel = grpc.insecure_channel(self.addr)
        grpc.channel_ready_future(self.channel).result(timeout=30)
        self.stub = pb_grpc.NumbersStationStub(self.channel)

    def stop(self):
        if getattr(self, "channel", None):
            self.channel.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Stream:
    """One bidirectional `Stream` call: send with `send`, read with `next`."""

    def __init__(self, stub, first):
        self.outbox = queue.Queue()
        self.outbox.put(first)
        self.call = stub.Stream(iter(self.outbox.get, None), timeout=DEADLINE)

    def send(self, msg):
        self.outbox.put(msg)

    def next(self):
        return next(self.call)

    def close(self):
        self.outbox.put(None)


def open_msg(client_id, count, nonce):
    return pb.ClientMessage(open=pb.Open(client_id=client_id, count=count, open_nonce=nonce))


def resume_msg(client_id, token, next_index):
    return pb.ClientMessage(
        resume=pb.Resume(client_id=client_id, resume_token=token, next_index=next_index)
    )


def ack_msg(next_index):
    return pb.ClientMessage(ack=pb.Ack(next_index=next_index))


def rejection(stub, first):
    """The RpcError a stream starting with `first` ends with (None if OK)."""
    s = Stream(stub, first)
    try:
        for _ in range(100000):
            s.next()
    except StopIteration:
        return None
    except grpc.RpcError as e:
        return e
    finally:
        s.close()
    return None


def error_info(err):
    """(reason, domain, metadata) of the ErrorInfo in an RpcError, or None."""
    status = rpc_status.from_call(err)
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason, info.domain, dict(info.metadata)
    return None


def retry_delay_ms(err):
    status = rpc_status.from_call(err)
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToMilliseconds()
    return None


def trailer(err, key):
    for k, v in err.trailing_metadata() or ():
        if k == key:
            return v
    return None


def check_rejection(name, err, code, reason):
    if not check(f"{name}: stream rejected", err is not None, "ended OK"):
        return
    check(f"{name}: code {code.name}", err.code() == code, f"{err.code()}: {err.details()}")
    info = error_info(err)
    check(
        f"{name}: ErrorInfo {reason} in {DOMAIN}",
        info is not None and info[0] == reason and info[1] == DOMAIN,
        f"{info}",
    )


def resume_after_drop(stub):
    count = 20
    client_id = str(uuid.uuid4())
    values = {}

    # First stream: read 8 numbers, acknowledging each, then drop it.
    s = Stream(stub, open_msg(client_id, count, os.urandom(16)))
    attached = s.next().attached
    token = attached.resume_token
    check("open: Attached for the whole count", attached.count == count and attached.next_index == 0)
    check("open: 16-byte resume token", len(token) == 16)
    for _ in range(8):
        n = s.next().number
        values[n.index] = n.value
        s.send(ack_msg(n.index + 1))
    s.call.cancel()  # The connection "drops" mid-stream.
    s.close()
    held = len(values)
    check("first stream: numbers 0..7 in order", sorted(values) == list(range(held)))

    # Second stream: resume where we stopped.
    s = Stream(stub, resume_msg(client_id, token, held))
    attached = s.next().attached
    check("resume: Attached at next_index", attached.next_index == held, f"{attached.next_index}")
    checksum = None
    while len(values) < count:
        n = s.next().number
        if n.index in values:
            check("resume: no number twice", False, f"index {n.index}")
            break
        values[n.index] = n.value
        if n.HasField("checksum"):
            checksum = n.checksum
        s.send(ack_msg(n.index + 1))
    end_ok = True
    try:
        for extra in s.call:
            end_ok = False
            check("no message after the final number", False, f"{extra}")
    except grpc.RpcError as e:
        end_ok = check("stream ends OK after the final ack", False, f"{e.code()}: {e.details()}")
    s.close()
    check("every index once", sorted(values) == list(range(count)))
    check("stream ends OK after the final ack", end_ok)
    data = b"".join(values[i].to_bytes(4, "big") for i in range(count))
    check(
        "checksum: zlib.crc32 over big-endian u32s matches the server's",
        checksum is not None and zlib.crc32(data) == checksum,
        f"server {checksum}, client {zlib.crc32(data)}",
    )
    # The session is gone once completed.
    err = rejection(stub, resume_msg(client_id, token, count))
    check_rejection("resume after completion", err, grpc.StatusCode.NOT_FOUND, "SESSION_UNKNOWN")


def rejections(stub):
    live = str(uuid.uuid4())
    s = Stream(stub, open_msg(live, 1000, os.urandom(16)))
    token = s.next().attached.resume_token
    wrong = bytes([token[0] ^ 1]) + token[1:]

    err = rejection(stub, resume_msg(live, wrong, 0))
    check_rejection("wrong token", err, grpc.StatusCode.PERMISSION_DENIED, "TOKEN_MISMATCH")
    if err is not None and error_info(err):
        check("wrong token: ErrorInfo names the session", error_info(err)[2].get("client_id") == live)
        check("wrong token: no retry delay", retry_delay_ms(err) is None)

    err = rejection(stub, resume_msg(str(uuid.uuid4()), os.urandom(16), 0))
    check_rejection("unknown session", err, grpc.StatusCode.NOT_FOUND, "SESSION_UNKNOWN")

    err = rejection(stub, open_msg(live, 10, os.urandom(16)))
    check_rejection("open of a live id", err, grpc.StatusCode.ALREADY_EXISTS, "SESSION_EXISTS")

    err = rejection(stub, open_msg(str(uuid.uuid4()), 0, os.urandom(16)))
    check_rejection("count 0", err, grpc.StatusCode.INVALID_ARGUMENT, "BAD_REQUEST")

    err = rejection(stub, open_msg("not-a-uuid", 10, b""))
    check_rejection("malformed client id", err, grpc.StatusCode.INVALID_ARGUMENT, "BAD_REQUEST")

    # The owner was not disturbed by any of it.
    n = s.next().number
    check("the live session still streams", n.index == 0, f"{n}")
    s.call.cancel()
    s.close()


def full_server(binary):
    server = Server(binary, "--interval", "50ms", "--max-streams", "1", "--retry-after", "1s")
    try:
        s = Stream(server.stub, open_msg(str(uuid.uuid4()), 1000, os.urandom(16)))
        s.next()
        err = rejection(server.stub, open_msg(str(uuid.uuid4()), 10, os.urandom(16)))
        check_rejection("full server", err, grpc.StatusCode.RESOURCE_EXHAUSTED, "SERVER_FULL")
        delay = retry_delay_ms(err) if err is not None else None
        check("full server: RetryInfo of 1-1.5 s", delay is not None and 1000 <= delay <= 1500, f"{delay}")
        pushback = trailer(err, "grpc-retry-pushback-ms") if err is not None else None
        check(
            "full server: grpc-retry-pushback-ms agrees with RetryInfo",
            pushback is not None and delay is not None and abs(int(pushback) - delay) <= 1,
            f"{pushback} vs {delay}",
        )
        s.call.cancel()
        s.close()
    finally:
        server.stop()


def main():
    binary = sys.argv[1]
    check("the standard library's numbers module is importable beside the package", hasattr(numbers, "Number"))
    server = Server(binary, "--interval", "50ms", "--session-ttl", "10s")
    try:
        for part in (resume_after_drop, rejections):
            try:
                part(server.stub)
            except Exception as e:  # A crash of one part is a failure, not the end.
                check(f"{part.__name__} ran to the end", False, repr(e))
    finally:
        server.stop()
    try:
        full_server(binary)
    except Exception as e:
        check("full_server ran to the end", False, repr(e))
    passed = sum(RESULTS)
    failed = len(RESULTS) - passed
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed or not RESULTS else 0)


if __name__ == "__main__":
    main()
