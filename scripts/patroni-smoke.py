"""Patroni's etcd3 DCS (Patroni's own client of etcd's JSON gateway) against
HOST:PORT: the calls a Patroni member makes in its HA loop (member key,
initialize, leader race, leader lease keep-alive, config, failover key, the
watch thread's /v3/watch stream, cleanup), without PostgreSQL.

    python scripts/patroni-smoke.py 127.0.0.1:2379   # run by scripts/gateway-suite.sh
"""
import sys, time, logging
logging.basicConfig(level=logging.WARNING)
from patroni.postgresql.mpp import get_mpp
from patroni.dcs.etcd3 import Etcd3

host = sys.argv[1]
cfg = {'host': host, 'scope': 'smoke', 'name': 'pg0', 'ttl': 30, 'retry_timeout': 10, 'loop_wait': 10,
       'namespace': '/service/'}
dcs = Etcd3(cfg, get_mpp({}))
steps = []
def step(name, ok):
    steps.append((name, bool(ok)))
    print(('ok   ' if ok else 'FAIL ') + name, flush=True)

step('touch_member', dcs.touch_member({'conn_url': 'postgres://127.0.0.1:5432/postgres', 'api_url': 'http://127.0.0.1:8008/patroni', 'state': 'running', 'role': 'primary'}))
step('initialize', dcs.initialize(create_new=True, sysid='7000000000000000001'))
step('attempt_to_acquire_leader', dcs.attempt_to_acquire_leader())
c = dcs.get_cluster()
step('get_cluster sees leader pg0', c.leader is not None and c.leader.name == 'pg0')
step('get_cluster sees member pg0', any(m.name == 'pg0' for m in c.members))
step('initialize key read back', c.initialize == '7000000000000000001')
step('update_leader', dcs.update_leader(c, 100))
# A kept lease: the forced refresh answers False (no new grant needed).
step('lease keep-alive', dcs._do_refresh_lease(force=True) is False and dcs._lease)
step('set_config_value', dcs.set_config_value('{"ttl": 30}'))
c = dcs.get_cluster()
step('config read back', c.config is not None and c.config.data.get('ttl') == 30)
# The watcher thread (a /v3/watch stream) sees a change made by a write.
step('set_failover_value', dcs.set_failover_value('{"leader": "pg0"}'))
deadline = time.time() + 10
while time.time() < deadline and (dcs.get_cluster().failover is None):
    time.sleep(0.1)
step('failover key seen through the watch cache', dcs.get_cluster().failover is not None)
step('delete_leader', dcs.delete_leader(dcs.get_cluster().leader))
step('delete_cluster', dcs.delete_cluster())
failed = [n for n, ok in steps if not ok]
print(f"{len(steps) - len(failed)} passed, {len(failed)} failed")
sys.exit(1 if failed else 0)
