#!/usr/bin/env python3
"""A TCP relay that counts the bytes a server sends to its clients.

    benches/byte-counter.py LISTEN_PORT_FILE UPSTREAM_PORT COUNT_FILE

Listens on a free port of 127.0.0.1 (written to LISTEN_PORT_FILE once it listens), relays every
connection to 127.0.0.1:UPSTREAM_PORT, and after each connection closes appends the bytes the
upstream sent on it to COUNT_FILE, one number per line. The benches point a cache URL's endpoint
at it to count what a command fetched, headers included (sum COUNT_FILE after the command ends;
truncate it before the next).
"""
import socket
import sys
import threading

port_file, upstream_port, count_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
lock = threading.Lock()


def pump(src, dst, counter):
    try:
        while True:
            data = src.recv(1 << 16)
            if not data:
                break
            counter[0] += len(data)
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def relay(client):
    upstream = socket.create_connection(("127.0.0.1", upstream_port))
    sent, received = [0], [0]
    up = threading.Thread(target=pump, args=(client, upstream, sent))
    up.start()
    pump(upstream, client, received)
    up.join()
    client.close()
    upstream.close()
    with lock, open(count_file, "a") as f:
        f.write(f"{received[0]}\n")


listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", 0))
listener.listen(64)
with open(port_file, "w") as f:
    f.write(str(listener.getsockname()[1]))
while True:
    conn, _ = listener.accept()
    threading.Thread(target=relay, args=(conn,), daemon=True).start()
