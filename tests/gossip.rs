//! Black-box tests of gossip membership: real serf nodes on 127.0.0.1 with random ports.
//!
//! Every wait polls a condition against a deadline; nothing sleeps in place of waiting. The only
//! fixed-length windows are where the test asserts that something does NOT happen.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use logbook::cluster::membership::{
    GossipConfig, GossipTiming, JoinBackoff, Member, MemberStatus, Membership, MembershipError,
    MembershipEvent, SerfMembership, join_with_retry,
};
use tokio::io::AsyncReadExt;
use tokio::sync::broadcast;
use tokio::time::{Instant, timeout};

/// How long a cluster may take to converge on loopback.
const CONVERGE: Duration = Duration::from_secs(10);
/// Window during which a rejected node must never show up.
const QUIET_WINDOW: Duration = Duration::from_secs(3);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn grpc_addr(id: u64) -> String {
    format!("127.0.0.1:{}", 50_000 + id)
}

fn config(id: u64, key: Option<[u8; 32]>) -> GossipConfig {
    GossipConfig {
        encryption_key: key.map(|k| k.to_vec()),
        timing: GossipTiming::loopback(),
        ..GossipConfig::new(id, "127.0.0.1:0".parse().unwrap(), grpc_addr(id))
    }
}

async fn start(id: u64, key: Option<[u8; 32]>) -> SerfMembership {
    SerfMembership::start(config(id, key)).await.unwrap()
}

fn seed(node: &SerfMembership) -> Vec<String> {
    vec![node.bound_addr().to_string()]
}

/// Node id -> status, as `node` sees the cluster.
fn view(node: &SerfMembership) -> BTreeMap<u64, MemberStatus> {
    node.members()
        .into_iter()
        .map(|m| (m.node_id, m.status))
        .collect()
}

fn status_of(node: &SerfMembership, id: u64) -> Option<MemberStatus> {
    view(node).get(&id).copied()
}

/// Polls `cond` until it holds or `deadline` passes; panics with `what` and the last `describe`.
async fn wait_until(
    what: &str,
    deadline: Duration,
    mut cond: impl FnMut() -> bool,
    describe: impl Fn() -> String,
) {
    let end = Instant::now() + deadline;
    while !cond() {
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}; last state: {}",
            describe()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every node sees exactly `ids`, all alive.
async fn wait_all_alive(nodes: &[&SerfMembership], ids: &[u64]) {
    let expected: BTreeMap<u64, MemberStatus> =
        ids.iter().map(|&id| (id, MemberStatus::Alive)).collect();
    wait_until(
        &format!("nodes {ids:?} alive everywhere"),
        CONVERGE,
        || nodes.iter().all(|n| view(n) == expected),
        || format!("{:?}", nodes.iter().map(|n| view(n)).collect::<Vec<_>>()),
    )
    .await;
}

/// Receives events until one matches `pred`; panics at the deadline.
async fn expect_event(
    rx: &mut broadcast::Receiver<MembershipEvent>,
    what: &str,
    pred: impl Fn(&MembershipEvent) -> bool,
) -> MembershipEvent {
    let end = Instant::now() + CONVERGE;
    let mut seen = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match timeout(left, rx.recv()).await {
            Ok(Ok(ev)) if pred(&ev) => return ev,
            Ok(Ok(ev)) => seen.push(ev),
            Ok(Err(e)) => panic!("event channel failed while waiting for {what}: {e}"),
            Err(_) => panic!("no event {what} within {CONVERGE:?}; saw {seen:?}"),
        }
    }
}

/// Starts `n` nodes with ids 1..=n and joins all of them through node 1.
async fn cluster(n: u64) -> Vec<SerfMembership> {
    let mut nodes = Vec::new();
    for id in 1..=n {
        nodes.push(start(id, None).await);
    }
    let seeds = seed(&nodes[0]);
    for node in &nodes[1..] {
        assert_eq!(node.join(&seeds).await.unwrap(), 1);
    }
    let refs: Vec<&SerfMembership> = nodes.iter().collect();
    let ids: Vec<u64> = (1..=n).collect();
    wait_all_alive(&refs, &ids).await;
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_join_one_seed_and_see_each_other_with_tags() {
    init_tracing();
    let n1 = start(1, None).await;
    let n2 = start(2, None).await;
    let n3 = start(3, None).await;
    assert_ne!(n1.bound_addr().port(), 0, "port 0 must be resolved");
    assert_eq!(n1.advertise_addr(), n1.bound_addr());
    assert_eq!(view(&n1).len(), 1, "a fresh node knows only itself");
    let mut events = n1.subscribe();

    assert_eq!(n2.join(&seed(&n1)).await.unwrap(), 1);
    assert_eq!(n3.join(&seed(&n1)).await.unwrap(), 1);
    wait_all_alive(&[&n1, &n2, &n3], &[1, 2, 3]).await;

    let expected: Vec<Member> = [&n1, &n2, &n3]
        .iter()
        .map(|n| Member {
            node_id: n.local_node_id(),
            grpc_addr: grpc_addr(n.local_node_id()),
            gossip_addr: n.advertise_addr(),
            status: MemberStatus::Alive,
        })
        .collect();
    for node in [&n1, &n2, &n3] {
        assert_eq!(
            node.members(),
            expected,
            "view of node {}",
            node.local_node_id()
        );
    }

    for id in [2, 3] {
        let ev = expect_event(
            &mut events,
            &format!("Joined({id})"),
            |e| matches!(e, MembershipEvent::Joined(m) if m.node_id == id),
        )
        .await;
        assert_eq!(ev.member().grpc_addr, grpc_addr(id));
    }

    for node in [&n1, &n2, &n3] {
        node.leave().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_leave_is_seen_as_left() {
    init_tracing();
    let nodes = cluster(3).await;
    let (n1, n2, n3) = (&nodes[0], &nodes[1], &nodes[2]);
    let mut events = n1.subscribe();

    n3.leave().await.unwrap();
    wait_until(
        "node 3 seen as Left by nodes 1 and 2",
        CONVERGE,
        || {
            status_of(n1, 3) == Some(MemberStatus::Left)
                && status_of(n2, 3) == Some(MemberStatus::Left)
        },
        || format!("{:?} {:?}", view(n1), view(n2)),
    )
    .await;
    expect_event(
        &mut events,
        "Left(3)",
        |e| matches!(e, MembershipEvent::Left(m) if m.node_id == 3),
    )
    .await;
    assert_eq!(status_of(n1, 2), Some(MemberStatus::Alive));
    assert_eq!(status_of(n2, 1), Some(MemberStatus::Alive));

    // A left node is stopped: leaving again is a no-op, joining is refused.
    n3.leave().await.unwrap();
    assert!(matches!(
        n3.join(&seed(n1)).await,
        Err(MembershipError::NotRunning)
    ));

    n1.leave().await.unwrap();
    n2.leave().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_node_is_reported_failed() {
    init_tracing();
    let mut nodes = cluster(3).await;
    let n3 = nodes.pop().unwrap();
    let (n1, n2) = (&nodes[0], &nodes[1]);
    let mut events = n1.subscribe();

    drop(n3); // no leave: like a crashed process
    wait_until(
        "node 3 seen as Failed by nodes 1 and 2",
        CONVERGE,
        || {
            status_of(n1, 3) == Some(MemberStatus::Failed)
                && status_of(n2, 3) == Some(MemberStatus::Failed)
        },
        || format!("{:?} {:?}", view(n1), view(n2)),
    )
    .await;
    expect_event(
        &mut events,
        "Failed(3)",
        |e| matches!(e, MembershipEvent::Failed(m) if m.node_id == 3),
    )
    .await;
    assert_eq!(status_of(n1, 2), Some(MemberStatus::Alive));
    assert_eq!(status_of(n2, 1), Some(MemberStatus::Alive));

    n1.leave().await.unwrap();
    n2.leave().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_cluster_rejects_wrong_and_missing_keys() {
    init_tracing();
    let key = [7u8; 32];
    let n1 = start(1, Some(key)).await;
    let n2 = start(2, Some(key)).await;
    assert!(n1.encryption_enabled() && n2.encryption_enabled());
    assert_eq!(n2.join(&seed(&n1)).await.unwrap(), 1);
    wait_all_alive(&[&n1, &n2], &[1, 2]).await;

    let wrong = start(3, Some([8u8; 32])).await;
    let plain = start(4, None).await;
    assert!(!plain.encryption_enabled());
    let wrong_join = wrong.join(&seed(&n1)).await;
    assert!(
        matches!(wrong_join, Err(MembershipError::JoinFailed { .. })),
        "wrong key joined: {wrong_join:?}"
    );
    let plain_join = plain.join(&seed(&n1)).await;
    assert!(
        matches!(plain_join, Err(MembershipError::JoinFailed { .. })),
        "no key joined: {plain_join:?}"
    );

    // Push/pull runs every second in the loopback timings: give a leak several rounds to show.
    let end = Instant::now() + QUIET_WINDOW;
    while Instant::now() < end {
        for node in [&n1, &n2] {
            let v = view(node);
            assert_eq!(
                v.keys().copied().collect::<Vec<_>>(),
                vec![1, 2],
                "node {} lists a node without the key: {v:?}",
                node.local_node_id()
            );
        }
        assert_eq!(view(&wrong).keys().copied().collect::<Vec<_>>(), vec![3]);
        assert_eq!(view(&plain).keys().copied().collect::<Vec<_>>(), vec![4]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    for node in [&n1, &n2, &wrong, &plain] {
        node.leave().await.unwrap();
    }
}

/// Lets a node join a fake seed and returns the first bytes it sent over TCP.
async fn bytes_sent_to_a_seed(node: &SerfMembership) -> Vec<u8> {
    let spy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let seeds = [spy.local_addr().unwrap().to_string()];
    let read = async {
        let (mut stream, _) = spy.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        // Read what arrives until the joiner stops sending (it waits for our answer).
        while let Ok(Ok(n)) = timeout(Duration::from_millis(500), stream.read(&mut chunk)).await {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        buf
    };
    let (joined, bytes) = tokio::join!(node.join(&seeds), read);
    assert!(joined.is_err(), "a silent seed cannot be joined");
    bytes
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_gossip_is_not_plaintext_on_the_wire() {
    init_tracing();
    let plain = start(21, None).await;
    let sent = bytes_sent_to_a_seed(&plain).await;
    assert!(
        contains(&sent, b"node-21") && contains(&sent, grpc_addr(21).as_bytes()),
        "control: plaintext join should carry the node name and gRPC address ({} bytes)",
        sent.len()
    );

    let sealed = start(22, Some([9u8; 32])).await;
    let sent = bytes_sent_to_a_seed(&sealed).await;
    assert!(!sent.is_empty(), "the encrypted node sent nothing");
    assert!(
        !contains(&sent, b"node-22") && !contains(&sent, grpc_addr(22).as_bytes()),
        "encrypted join leaks the node name or gRPC address in plaintext"
    );

    plain.leave().await.unwrap();
    sealed.leave().await.unwrap();
}

/// A [`Membership`] that counts join attempts, to see `join_with_retry` retrying.
struct CountingJoins {
    inner: Arc<SerfMembership>,
    attempts: AtomicUsize,
}

impl Membership for CountingJoins {
    async fn join(&self, seeds: &[String]) -> Result<usize, MembershipError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        self.inner.join(seeds).await
    }
    fn members(&self) -> Vec<Member> {
        self.inner.members()
    }
    fn subscribe(&self) -> broadcast::Receiver<MembershipEvent> {
        self.inner.subscribe()
    }
    async fn leave(&self) -> Result<(), MembershipError> {
        self.inner.leave().await
    }
    fn local_node_id(&self) -> u64 {
        self.inner.local_node_id()
    }
}

/// A port that was free a moment ago, for a node that starts later.
async fn free_port() -> u16 {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    // The same port must be free for UDP too.
    let udp = tokio::net::UdpSocket::bind(("127.0.0.1", port))
        .await
        .unwrap();
    drop((tcp, udp));
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_retries_until_the_seed_starts() {
    init_tracing();
    let late = Arc::new(CountingJoins {
        inner: Arc::new(start(2, None).await),
        attempts: AtomicUsize::new(0),
    });
    let seed_port = free_port().await;
    // A DNS name, not an address: resolution goes through the system resolver.
    let seeds = vec![format!("localhost:{seed_port}")];
    let backoff = JoinBackoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(400),
    };
    let retry = tokio::spawn({
        let late = late.clone();
        async move { join_with_retry(&*late, &seeds, backoff, std::future::pending()).await }
    });

    wait_until(
        "three failed join attempts",
        CONVERGE,
        || late.attempts.load(Ordering::SeqCst) >= 3,
        || format!("{} attempts", late.attempts.load(Ordering::SeqCst)),
    )
    .await;
    assert!(!retry.is_finished(), "join gave up while the seed was down");

    let seed_addr: SocketAddr = ([127, 0, 0, 1], seed_port).into();
    let seed_node = SerfMembership::start(GossipConfig {
        bind_addr: seed_addr,
        ..config(1, None)
    })
    .await
    .unwrap();
    assert_eq!(seed_node.bound_addr(), seed_addr);

    let joined = timeout(CONVERGE, retry).await.unwrap().unwrap().unwrap();
    assert_eq!(joined, 1);
    wait_all_alive(&[&seed_node, &late.inner], &[1, 2]).await;

    seed_node.leave().await.unwrap();
    late.leave().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_retry_stops_on_shutdown() {
    init_tracing();
    let node = start(31, None).await;
    let seeds = vec![format!("127.0.0.1:{}", free_port().await)];
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let retry = join_with_retry(&node, &seeds, JoinBackoff::default(), async {
        let _ = stopped.await;
    });
    let (result, ()) = tokio::join!(retry, async { drop(stop) });
    assert!(
        matches!(result, Err(MembershipError::Cancelled)),
        "{result:?}"
    );
    // Nothing to join is an error, not a silent success; joining only ourselves starts a cluster.
    assert!(matches!(
        node.join(&[]).await,
        Err(MembershipError::NoSeeds)
    ));
    assert_eq!(node.join(&seed(&node)).await.unwrap(), 0);
    node.leave().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_with_same_id_is_alive_again() {
    init_tracing();
    let mut nodes = cluster(2).await;

    // Crash node 2, restart it on the same address.
    let old = nodes.pop().unwrap();
    let old_addr = old.bound_addr();
    old.shutdown().await.unwrap();
    drop(old);
    let n1 = &nodes[0];
    wait_until(
        "node 2 seen as Failed",
        CONVERGE,
        || status_of(n1, 2) == Some(MemberStatus::Failed),
        || format!("{:?}", view(n1)),
    )
    .await;
    let same_addr = SerfMembership::start(GossipConfig {
        bind_addr: old_addr,
        ..config(2, None)
    })
    .await
    .unwrap();
    assert_eq!(same_addr.join(&seed(n1)).await.unwrap(), 1);
    wait_all_alive(&[n1, &same_addr], &[1, 2]).await;

    // Crash it again, restart it on a new address: accepted once the dead entry may be
    // reclaimed (`dead_node_reclaim_time`, 1 s in the loopback timings).
    same_addr.shutdown().await.unwrap();
    drop(same_addr);
    wait_until(
        "node 2 seen as Failed again",
        CONVERGE,
        || status_of(n1, 2) == Some(MemberStatus::Failed),
        || format!("{:?}", view(n1)),
    )
    .await;
    let new_addr = start(2, None).await;
    assert_ne!(new_addr.bound_addr(), old_addr);
    join_with_retry(
        &new_addr,
        &seed(n1),
        JoinBackoff::default(),
        std::future::pending(),
    )
    .await
    .unwrap();
    wait_until(
        "node 2 alive on its new address",
        CONVERGE,
        || {
            n1.members().iter().any(|m| {
                m.node_id == 2
                    && m.status == MemberStatus::Alive
                    && m.gossip_addr == new_addr.advertise_addr()
            }) && view(&new_addr).len() == 2
        },
        || format!("{:?} {:?}", n1.members(), new_addr.members()),
    )
    .await;

    n1.leave().await.unwrap();
    new_addr.leave().await.unwrap();
}
