"""A client that sends its requests and closes its side of the stream:
Watch (one create, then a put) and LeaseKeepAlive (three keep-alives).
Usage: halfclose.py HOST:PORT"""
import sys, threading, time, grpc
import aetcd.rpc as pb
ch = grpc.insecure_channel(sys.argv[1])
kv, lease, watch = pb.KVStub(ch), pb.LeaseStub(ch), pb.WatchStub(ch)
# Watch: one create request, then the client half-closes its side.
it = watch.Watch(iter([pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b'hc'))]), timeout=4)
got = []
def rd():
    try:
        for r in it: got.append(('created' if r.created else 'events', [e.kv.value for e in r.events]))
    except grpc.RpcError as e: got.append(('end', e.code().name))
t = threading.Thread(target=rd); t.start()
time.sleep(0.5)
kv.Put(pb.PutRequest(key=b'hc', value=b'1'))
t.join()
print('watch after half-close:', got)
# KeepAlive: three requests, then half-close.
g = lease.LeaseGrant(pb.LeaseGrantRequest(TTL=30))
rs = list(lease.LeaseKeepAlive(iter([pb.LeaseKeepAliveRequest(ID=g.ID), pb.LeaseKeepAliveRequest(ID=424242), pb.LeaseKeepAliveRequest(ID=g.ID)]), timeout=5))
print('keepalive answers after half-close:', [(r.ID == g.ID, r.TTL) for r in rs])
