//! The gRPC health service (`grpc.health.v1.Health`) on the client port,
//! as etcd serves it: the overall status (service name "") is SERVING
//! while the replica has a working regency ([`Backend::has_leader`], in
//! bftd its `/healthz` health) and NOT_SERVING otherwise, as etcd 3.5
//! turns it off when its member loses the raft leader. gRPC clients with
//! health checking on (and load balancers) then avoid the replica.
//!
//! Served by `tonic-health`; [`report`] keeps its status current by
//! polling the backend every [`HEALTH_POLL_INTERVAL`] (see [`start`]).

use std::sync::Arc;
use std::time::Duration;

use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::backend::Backend;

/// How often the health status is re-read from the backend.
pub const HEALTH_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The overall status `backend` warrants now.
pub fn serving_status<B: Backend>(backend: &B) -> ServingStatus {
    if backend.has_leader() {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

/// The health service for `backend`, its status already set, and the
/// task that keeps the status current (polling every `interval`; abort it
/// when the server stops).
pub async fn start<B: Backend>(
    backend: Arc<B>,
    interval: Duration,
) -> (HealthServer<impl Health>, tokio::task::JoinHandle<()>) {
    let (reporter, service) = tonic_health::server::health_reporter();
    let now = serving_status(backend.as_ref());
    reporter.set_service_status("", now).await;
    let task = tokio::spawn(report(backend, reporter, now, interval));
    (service, task)
}

/// Publishes the overall status ("") of `backend` to `reporter` whenever
/// it differs from the last one published (`last`), checking every
/// `interval`, forever; so `Watch` streams see each change once.
async fn report<B: Backend>(
    backend: Arc<B>,
    reporter: HealthReporter,
    mut last: ServingStatus,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = serving_status(backend.as_ref());
        if now != last {
            tracing::info!(status = ?now, "gRPC health status changed");
            reporter.set_service_status("", now).await;
            last = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::tests::one_store;
    use std::sync::atomic::Ordering;
    use tonic_health::pb::health_check_response::ServingStatus as Pb;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    #[tokio::test]
    async fn the_health_service_says_serving_only_while_the_replica_has_a_leader() {
        let backend = Arc::new(one_store(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let table = crate::client_port::ConnTable::new(&crate::ApiLimits::default());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(crate::serve_grpc(
            listener,
            backend.clone(),
            crate::ApiLimits::default(),
            table,
            async {
                let _ = stop_rx.await;
            },
        ));
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = HealthClient::new(channel);
        let check = |service: &str| HealthCheckRequest {
            service: service.into(),
        };
        let status = |c: &mut HealthClient<_>| {
            let mut c = c.clone();
            async move { c.check(check("")).await.unwrap().into_inner().status }
        };
        assert_eq!(status(&mut client).await, Pb::Serving as i32);
        // An unknown service name: NOT_FOUND, as grpc-go's health server.
        let e = client.check(check("nope")).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        // A watcher sees the change to NOT_SERVING and back.
        let mut watch = client.watch(check("")).await.unwrap().into_inner();
        assert_eq!(
            watch.message().await.unwrap().unwrap().status,
            Pb::Serving as i32
        );
        backend.leader.store(false, Ordering::Relaxed);
        assert_eq!(
            watch.message().await.unwrap().unwrap().status,
            Pb::NotServing as i32
        );
        assert_eq!(status(&mut client).await, Pb::NotServing as i32);
        backend.leader.store(true, Ordering::Relaxed);
        assert_eq!(
            watch.message().await.unwrap().unwrap().status,
            Pb::Serving as i32
        );
        let _ = stop_tx.send(());
        drop(watch);
        drop(client);
        server.await.unwrap().unwrap();
    }
}
