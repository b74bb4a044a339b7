"""Raw etcd v3 gRPC probe of Lease and Watch: a fixed sequence of requests,
responses printed normalised (server-chosen lease ids as L0, L1...;
revisions other than 0 relative to the revision at the start) so that the
outputs of two servers can be diffed. Usage: probe.py HOST:PORT"""
import json, sys, time, queue, threading
import grpc
from google.protobuf.json_format import MessageToDict
import aetcd.rpc as pb

ep = sys.argv[1]
ch = grpc.insecure_channel(ep)
kv, lease, watch, maint = pb.KVStub(ch), pb.LeaseStub(ch), pb.WatchStub(ch), pb.MaintenanceStub(ch)
base = kv.Range(pb.RangeRequest(key=b'x')).header.revision
ids = {}

def norm(d):
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            if k in ('clusterId', 'memberId', 'raftTerm'):
                continue
            if k in ('revision', 'createRevision', 'modRevision', 'compactRevision') and int(v) != 0:
                v = int(v) - base
            if k == 'ID' or k == 'id' or k == 'lease':
                v = ids.setdefault(int(v), f'L{len(ids)}') if int(v) > 1000 else int(v)
            out[k] = norm(v)
        return out
    if isinstance(d, list):
        return [norm(x) for x in d]
    return d

def show(name, fn):
    try:
        r = fn()
        print(name, json.dumps(norm(MessageToDict(r, always_print_fields_with_no_presence=True)), sort_keys=True))
        return r
    except grpc.RpcError as e:
        print(name, 'ERROR', e.code().name, repr(e.details()))
        return None

# ---- Lease
g1 = show('grant ttl=1', lambda: lease.LeaseGrant(pb.LeaseGrantRequest(TTL=1)))
show('grant ttl=0', lambda: lease.LeaseGrant(pb.LeaseGrantRequest(TTL=0)))
show('grant ttl=-5', lambda: lease.LeaseGrant(pb.LeaseGrantRequest(TTL=-5)))
show('grant ttl=huge', lambda: lease.LeaseGrant(pb.LeaseGrantRequest(TTL=9999999999)))
show('grant id=100 ttl=60', lambda: lease.LeaseGrant(pb.LeaseGrantRequest(ID=100, TTL=60)))
show('grant id=100 again', lambda: lease.LeaseGrant(pb.LeaseGrantRequest(ID=100, TTL=60)))
show('grant id=-7', lambda: lease.LeaseGrant(pb.LeaseGrantRequest(ID=-7, TTL=60)))
show('ttl id=100 keys', lambda: lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=100, keys=True)))
show('put k1 lease=100', lambda: kv.Put(pb.PutRequest(key=b'k1', value=b'v', lease=100)))
show('put k2 lease=100', lambda: kv.Put(pb.PutRequest(key=b'k2', value=b'v', lease=100)))
show('ttl id=100 keys', lambda: lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=100, keys=True)))
show('put k1 lease=12345 (unknown)', lambda: kv.Put(pb.PutRequest(key=b'k1', value=b'v', lease=12345)))
show('put k1 ignore_lease', lambda: kv.Put(pb.PutRequest(key=b'k1', value=b'v2', ignore_lease=True)))
show('get k1', lambda: kv.Range(pb.RangeRequest(key=b'k1')))
show('put nokey ignore_lease', lambda: kv.Put(pb.PutRequest(key=b'nokey', value=b'v', ignore_lease=True)))
show('put k1 ignore_lease+lease', lambda: kv.Put(pb.PutRequest(key=b'k1', value=b'v', lease=100, ignore_lease=True)))
show('put k1 ignore_value', lambda: kv.Put(pb.PutRequest(key=b'k1', ignore_value=True)))
show('put k2 no lease (detach)', lambda: kv.Put(pb.PutRequest(key=b'k2', value=b'v')))
show('ttl id=100 keys', lambda: lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=100, keys=True)))
show('txn put k3 lease=100', lambda: kv.Txn(pb.TxnRequest(success=[pb.RequestOp(request_put=pb.PutRequest(key=b'k3', value=b'v', lease=100))])))
show('txn put k3 lease=999 (unknown)', lambda: kv.Txn(pb.TxnRequest(success=[pb.RequestOp(request_put=pb.PutRequest(key=b'k3', value=b'v', lease=999))])))
show('ttl id=12345', lambda: lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=12345, keys=True)))
def ka(*lids):
    q = [pb.LeaseKeepAliveRequest(ID=i) for i in lids]
    return list(lease.LeaseKeepAlive(iter(q), timeout=5))
for r in ka(100, 12345):
    print('keepalive', json.dumps(norm(MessageToDict(r, always_print_fields_with_no_presence=True)), sort_keys=True))
r = lease.LeaseLeases(pb.LeaseLeasesRequest())
print('leases', sorted(norm(MessageToDict(r))['leases'], key=str))
show('revoke 100', lambda: lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=100)))
show('revoke 100 again', lambda: lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=100)))
show('get prefix k', lambda: kv.Range(pb.RangeRequest(key=b'k', range_end=b'l')))
show('grant id=200 ttl=60', lambda: lease.LeaseGrant(pb.LeaseGrantRequest(ID=200, TTL=60)))
show('revoke 200 (no keys)', lambda: lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=200)))
show('revoke 0', lambda: lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=0)))
show('ttl id=0', lambda: lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=0)))

# ---- Watch
class W:
    def __init__(self):
        self.q = queue.Queue()
        self.out = queue.Queue()
        self.it = watch.Watch(iter(self.q.get, None))
        threading.Thread(target=self._read, daemon=True).start()
    def _read(self):
        try:
            for r in self.it:
                self.out.put(r)
        except grpc.RpcError as e:
            self.out.put(('ERROR', e.code().name, e.details()))
    def send(self, req):
        self.q.put(req)
    def recv(self, name, t=3.0):
        try:
            r = self.out.get(timeout=t)
        except queue.Empty:
            print(name, 'no response in', t, 's')
            return None
        if isinstance(r, tuple):
            print(name, *r)
            return None
        print(name, json.dumps(norm(MessageToDict(r, always_print_fields_with_no_presence=True)), sort_keys=True))
        return r
    def close(self):
        self.q.put(None)
        self.it.cancel()

C = lambda **kw: pb.WatchRequest(create_request=pb.WatchCreateRequest(**kw))
w = W()
w.send(C(key=b'w')); w.recv('create w')
w.send(C(key=b'w', watch_id=0)); w.recv('create w watch_id=0 again')
w.send(C(key=b'w', watch_id=5, prev_kv=True)); w.recv('create w watch_id=5 prev_kv')
w.send(C(key=b'w', watch_id=5)); w.recv('create w watch_id=5 dup')
w.send(C(key=b'z', range_end=b'a')); w.recv('create empty range')
w.send(C(key=b'w', watch_id=-3)); w.recv('create watch_id=-3')
kv.Put(pb.PutRequest(key=b'w', value=b'1'))
for i in range(4): w.recv(f'event put w #{i}', t=1.5)
kv.DeleteRange(pb.DeleteRangeRequest(key=b'w'))
for i in range(4): w.recv(f'event del w #{i}', t=1.5)
w.send(pb.WatchRequest(cancel_request=pb.WatchCancelRequest(watch_id=1)))
w.recv('cancel 1')
w.send(pb.WatchRequest(cancel_request=pb.WatchCancelRequest(watch_id=77)))
w.recv('cancel 77 (unknown)', t=1.0)
w.send(pb.WatchRequest(progress_request=pb.WatchProgressRequest()))
w.recv('progress')
rev = kv.Range(pb.RangeRequest(key=b'x')).header.revision
w.send(C(key=b'f', start_revision=rev + 2)); w.recv('create future start_revision')
kv.Put(pb.PutRequest(key=b'f', value=b'a'))
w.recv('future: first put (rev+1), expect nothing', t=1.0)
kv.Put(pb.PutRequest(key=b'f', value=b'b'))
w.recv('future: second put (rev+2)')
w.send(C(key=b'', range_end=b'\0', start_revision=base + 1, watch_id=50)); 
for i in range(3): w.recv(f'all keys from base+1 #{i}', t=1.5)
w.send(C(key=b'k', range_end=b'l', filters=[pb.WatchCreateRequest.NOPUT], watch_id=60)); w.recv('create noput')
w.close()
for i in range(3):
    kv.Put(pb.PutRequest(key=b'c', value=str(i).encode()))
rev = kv.Range(pb.RangeRequest(key=b'x')).header.revision
show('compact rev-1', lambda: kv.Compact(pb.CompactionRequest(revision=rev - 1, physical=True)))
show('compact rev-1 again', lambda: kv.Compact(pb.CompactionRequest(revision=rev - 1)))
show('compact future', lambda: kv.Compact(pb.CompactionRequest(revision=rev + 100)))
w = W()
w.send(C(key=b'c', start_revision=rev - 2)); w.recv('create below compaction'); w.recv('compacted')
w.send(C(key=b'c', start_revision=rev - 1, watch_id=9)); w.recv('create at compaction'); w.recv('events at compaction')
w.close()

# ---- Lease expiry as seen by a watcher (time from grant to DELETE)
g = lease.LeaseGrant(pb.LeaseGrantRequest(TTL=2))
kv.Put(pb.PutRequest(key=b'exp', value=b'v', lease=g.ID))
t0 = time.time()
w = W()
w.send(C(key=b'exp', prev_kv=True)); w.recv('create exp')
r = w.recv('expiry event', t=15)
print('expiry after grant ttl=2: %.1f s' % (time.time() - t0), file=sys.stderr)
show('ttl expired lease', lambda: lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=g.ID)))
w.close()
