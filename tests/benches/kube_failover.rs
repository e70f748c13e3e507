//! How long the work of a killed leader takes to resume on another replica, with Dray's
//! default Lease timings (10 s, 7 s, 2 s): two release `dray serve` processes on the real
//! `kube-apiserver` + `etcd`, a Promotion waiting in an http step, the leader killed with
//! SIGKILL, and the time until the other replica polls the step's status again
//! (`dray_tests::failover`, which the test `kube_store` runs with short timings).
//!
//!     cargo build --release -p dray && cargo bench -p dray-tests --bench kube_failover

const RUNS: usize = 5;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut times = Vec::new();
    for run in 1..=RUNS {
        let failover = dray_tests::failover::kill_the_leader_mid_step(None).await;
        assert_eq!(
            failover.first_step_finished_before, failover.first_step_finished_after,
            "the first step ran again"
        );
        assert!(failover.taken_over_by_the_survivor, "{failover:?}");
        println!(
            "run {run}: killed → resumed in {:?}",
            failover.resumed_after
        );
        times.push(failover.resumed_after);
    }
    dray_tests::report("kill → resumed on the other replica", times);
}
