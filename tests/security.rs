//! Mutual TLS and ACLs against the real binary: certificates made by `logbook certs`, the TLS
//! matrix (no certificate, another CA, expired, plaintext, a client on the Raft service),
//! rotation on disk without a restart, and the ACL matrix with a policy reload.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use common::broker::{BrokerProcess, cli, http_get, logbook_bin, metric};
use logbook::client::{Client, ClientError};
use logbook::proto::v1 as pb;
use logbook::proto::v1::raft_service_client::RaftServiceClient;
use logbook::security::certs::{CertKind, Validity, issue};
use logbook::security::tls::{ClientTls, TlsFiles};
use tonic::Code;

/// A record with `value`, no key.
pub fn record(value: &str) -> logbook::log::NewRecord {
    logbook::log::NewRecord {
        key: None,
        value: Some(bytes::Bytes::from(value.to_string())),
        headers: Vec::new(),
        timestamp_ms: -1,
    }
}

/// Runs `logbook certs ...` and asserts it worked.
fn certs(args: &[&str]) {
    let out = std::process::Command::new(logbook_bin())
        .arg("certs")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "logbook certs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA in `dir` (named after it) with a node certificate `n1` for 127.0.0.1 and client
/// certificates.
fn authority(dir: &Path, clients: &[&str]) {
    let d = dir.to_str().unwrap();
    let name = format!("{} CA", dir.file_name().unwrap().to_str().unwrap());
    certs(&["init", "--dir", d, "--name", &name]);
    certs(&[
        "issue",
        "--dir",
        d,
        "--server",
        "--name",
        "n1",
        "--ip",
        "127.0.0.1",
        "--dns",
        "localhost",
    ]);
    for name in clients {
        certs(&["issue", "--dir", d, "--client", name]);
    }
}

fn pem(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.pem"))
}

fn key(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}-key.pem"))
}

/// TLS as `name` of the CA in `dir`, trusting `ca_dir`'s CA.
fn tls_as(ca_dir: &Path, dir: &Path, name: &str) -> ClientTls {
    ClientTls::new(
        TlsFiles {
            ca: pem(ca_dir, "ca"),
            cert: Some(pem(dir, name)),
            key: Some(key(dir, name)),
        },
        "",
    )
    .unwrap()
}

fn server_flags(dir: &Path) -> Vec<String> {
    [
        ("--tls-cert-file", pem(dir, "n1")),
        ("--tls-key-file", key(dir, "n1")),
        ("--tls-ca-file", pem(dir, "ca")),
    ]
    .into_iter()
    .flat_map(|(flag, path)| [flag.to_string(), path.display().to_string()])
    .collect()
}

fn start(data: &Path, flags: &[String]) -> BrokerProcess {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    BrokerProcess::start(data, &flags)
}

/// The code and text of a failed call, whether it failed connecting or on the call.
fn failure(e: ClientError) -> (Option<Code>, String) {
    (e.code(), e.to_string())
}

/// Creates a topic through `tls` (or plaintext), returning how it went.
async fn create_topic(addr: &str, tls: Option<&ClientTls>, name: &str) -> Result<(), ClientError> {
    let mut client = Client::connect_with(addr, tls).await?;
    client
        .create_topic(name, 1, Default::default())
        .await
        .map(|_| ())
}

/// Waits (up to 30 s) for `log` to contain `needle`.
fn wait_for_log(broker: &BrokerProcess, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = broker.log();
        if log.contains(needle) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "the broker never logged {needle:?}; its log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_matrix_refuses_each_bad_client_with_a_code_and_a_log_line() {
    let root = tempfile::tempdir().unwrap();
    let (ours, theirs) = (root.path().join("ours"), root.path().join("theirs"));
    authority(&ours, &["alice"]);
    authority(&theirs, &["mallory"]);
    // An expired client certificate from our own CA.
    let past = SystemTime::now() - Duration::from_secs(10 * 86_400);
    issue(
        &ours,
        &CertKind::Client { name: "old".into() },
        Validity {
            not_before: past,
            not_after: SystemTime::now() - Duration::from_secs(86_400),
        },
        false,
    )
    .unwrap();
    let broker = start(&root.path().join("data"), &server_flags(&ours));
    let addr = broker.addr.clone();

    // A valid client works end to end.
    let alice = tls_as(&ours, &ours, "alice");
    let mut client = Client::connect_with(&addr, Some(&alice)).await.unwrap();
    client
        .create_topic("secure", 1, Default::default())
        .await
        .unwrap();
    let ack = client
        .produce("secure", Some(0), &[record("hello")])
        .await
        .unwrap();
    assert_eq!(ack.base_offset, ack.last_offset);

    // No client certificate: the handshake completes, the call is UNAUTHENTICATED.
    let anonymous = ClientTls::new(
        TlsFiles {
            ca: pem(&ours, "ca"),
            cert: None,
            key: None,
        },
        "",
    )
    .unwrap();
    let (code, text) = failure(
        create_topic(&addr, Some(&anonymous), "t1")
            .await
            .unwrap_err(),
    );
    assert_eq!(code, Some(Code::Unauthenticated), "{text}");
    assert!(text.contains("client certificate"), "{text}");
    wait_for_log(
        &broker,
        "a client certificate signed by the cluster's CA is required",
    );

    // A certificate from another CA, and an expired one: UNAUTHENTICATED, saying why.
    for (who, tls, reason) in [
        (
            "another CA",
            tls_as(&ours, &theirs, "mallory"),
            "UnknownIssuer",
        ),
        ("expired", tls_as(&ours, &ours, "old"), "xpired"),
    ] {
        let (code, text) = failure(create_topic(&addr, Some(&tls), "t2").await.unwrap_err());
        assert_eq!(code, Some(Code::Unauthenticated), "{who}: {text}");
        assert!(
            text.contains("client certificate rejected") && text.contains(reason),
            "{who}: {text}"
        );
        let log = wait_for_log(&broker, reason);
        assert!(log.contains("client certificate rejected"), "{who}: {log}");
    }

    // Plaintext to the TLS port.
    let (code, text) = failure(create_topic(&addr, None, "t3").await.unwrap_err());
    assert_eq!(code, Some(Code::Unavailable), "plaintext: {text}");
    assert!(text.contains("requires TLS"), "{text}");
    wait_for_log(&broker, "plaintext on a TLS port");

    // A client certificate on the Raft service: PERMISSION_DENIED; a node certificate passes.
    let raft_call = |tls: ClientTls| {
        let addr = addr.clone();
        async move {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect_with_connector(tls.connector())
                .await
                .unwrap();
            RaftServiceClient::new(channel)
                .vote(pb::RaftVoteRequest {
                    group: "no-such-group".into(),
                    ..Default::default()
                })
                .await
        }
    };
    let denied = raft_call(alice.clone()).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(denied.message().contains("\"alice\""), "{denied:?}");
    wait_for_log(&broker, "may not call the Raft service");
    let node = raft_call(tls_as(&ours, &ours, "n1")).await;
    assert!(
        !matches!(&node, Err(s) if matches!(s.code(), Code::PermissionDenied | Code::Unauthenticated)),
        "a node certificate reaches the Raft service: {node:?}"
    );

    // The refusals are counted.
    let (status, text) = http_get(&broker.admin_addr, "/metrics");
    assert_eq!(status, 200);
    for series in [
        "logbook_tls_handshake_failures_total{reason=\"plaintext\"}",
        "logbook_authentication_failures_total{reason=\"no_certificate\"}",
        "logbook_authentication_failures_total{reason=\"not_a_node\"}",
    ] {
        assert!(
            metric(&text, series).unwrap_or(0.0) >= 1.0,
            "{series} in\n{text}"
        );
    }
    let bad = metric(
        &text,
        "logbook_authentication_failures_total{reason=\"bad_certificate\"}",
    );
    assert!(bad.unwrap_or(0.0) >= 2.0, "{text}");

    // Rotation: the node's certificate and CA files are replaced by ones from a new CA; new
    // connections use them without a restart.
    let next = root.path().join("next");
    authority(&next, &["alice"]);
    for name in ["n1", "n1-key", "ca"] {
        let tmp = ours.join(format!("{name}.pem.tmp"));
        std::fs::copy(next.join(format!("{name}.pem")), &tmp).unwrap();
        std::fs::rename(&tmp, ours.join(format!("{name}.pem"))).unwrap();
    }
    let rotated = tls_as(&next, &next, "alice");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match create_topic(&addr, Some(&rotated), "after-rotation").await {
            Ok(()) => break,
            Err(e) => assert!(
                Instant::now() < deadline,
                "the rotated certificates were never used: {e}; log:\n{}",
                broker.log()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for_log(&broker, "reloaded TLS certificates");
    // A client of the old CA no longer gets in (the server now trusts only the new CA).
    let (code, text) = failure(
        create_topic(&addr, Some(&tls_as(&next, &ours, "alice")), "t4")
            .await
            .unwrap_err(),
    );
    assert_eq!(code, Some(Code::Unauthenticated), "{text}");
}

/// Runs an action as `tls`'s subject: `Ok` or the status code and message.
async fn as_subject(
    addr: &str,
    tls: &ClientTls,
    action: &str,
    topic: &str,
) -> Result<(), (Code, String)> {
    let mut client = Client::connect_with(addr, Some(tls)).await.unwrap();
    let outcome = match action {
        "produce" => client
            .produce(topic, Some(0), &[record("x")])
            .await
            .map(|_| ()),
        "consume" => client
            .consume(topic, 0, 0, 1 << 20, Duration::ZERO)
            .await
            .map(|_| ()),
        "admin" => client.create_snapshot(topic, 0).await.map(|_| ()),
        "describe" => client.describe_topic(topic).await.map(|_| ()),
        other => panic!("no action {other}"),
    };
    outcome.map_err(|e| (e.code().unwrap_or(Code::Unknown), e.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_matrix_allows_and_denies_by_subject_action_and_topic_and_reloads() {
    let root = tempfile::tempdir().unwrap();
    let ca = root.path().join("ca");
    authority(&ca, &["alice", "bob", "ops", "eve"]);
    let policy = root.path().join("policy.csv");
    let rules = "p, alice, orders, produce\n\
                 p, alice, orders, consume\n\
                 p, bob, logs.*, produce\n\
                 p, bob, logs.*, consume\n\
                 p, ops, *, admin\n";
    std::fs::write(&policy, rules).unwrap();
    let mut flags = server_flags(&ca);
    flags.extend([
        "--acl-policy-file".to_string(),
        policy.display().to_string(),
    ]);
    let broker = start(&root.path().join("data"), &flags);
    let addr = broker.addr.clone();
    let who = |name: &str| tls_as(&ca, &ca, name);

    // Topic creation is admin: ops may, alice may not.
    for topic in ["orders", "logs.app"] {
        create_topic(&addr, Some(&who("ops")), topic).await.unwrap();
    }
    let (code, text) = failure(
        create_topic(&addr, Some(&who("alice")), "mine")
            .await
            .unwrap_err(),
    );
    assert_eq!(code, Some(Code::PermissionDenied), "{text}");
    for part in ["alice", "admin", "mine"] {
        assert!(text.contains(part), "the denial names {part}: {text}");
    }

    // The matrix: (subject, action, topic, allowed). `logs.app` is matched by `logs.*`.
    let matrix = [
        ("alice", "produce", "orders", true),
        ("alice", "consume", "orders", true),
        ("alice", "produce", "logs.app", false),
        ("alice", "consume", "logs.app", false),
        ("alice", "admin", "orders", false),
        ("bob", "produce", "logs.app", true),
        ("bob", "consume", "logs.app", true),
        ("bob", "produce", "orders", false),
        ("bob", "consume", "orders", false),
        ("ops", "admin", "orders", true),
        ("ops", "admin", "logs.app", true),
        ("ops", "produce", "orders", false),
        ("ops", "consume", "logs.app", false),
        ("eve", "produce", "orders", false),
        ("eve", "consume", "orders", false),
        ("eve", "admin", "orders", false),
        ("eve", "describe", "orders", false),
        ("alice", "describe", "orders", true),
    ];
    let mut denied = 0;
    for (subject, action, topic, allowed) in matrix {
        let outcome = as_subject(&addr, &who(subject), action, topic).await;
        match (allowed, outcome) {
            (true, Ok(())) => {}
            (false, Err((Code::PermissionDenied, text))) => {
                denied += 1;
                assert!(
                    text.contains(subject) && text.contains(topic) && text.contains(action),
                    "the denial names subject, action and topic: {text}"
                );
            }
            (allowed, outcome) => {
                panic!("{subject} {action} {topic}: expected allowed={allowed}, got {outcome:?}")
            }
        }
    }
    let log = wait_for_log(&broker, "denied by ACL");
    assert!(log.contains("eve"), "{log}");

    // Listing shows only the topics a subject has some right on.
    let mut alice = Client::connect_with(&addr, Some(&who("alice")))
        .await
        .unwrap();
    let names: Vec<String> = alice
        .list_topics()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, vec!["orders".to_string()]);

    // The CLI takes the same certificates.
    let (cert, key_file, ca_file) = (pem(&ca, "bob"), key(&ca, "bob"), pem(&ca, "ca"));
    let args = [
        "--ca",
        ca_file.to_str().unwrap(),
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key_file.to_str().unwrap(),
    ];
    let mut produce = vec!["produce", "--topic", "logs.app"];
    produce.extend(args);
    let out = cli(&addr, &produce, "from-cli\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut refused = vec!["produce", "--topic", "orders"];
    refused.extend(args);
    let out = cli(&addr, &refused, "nope\n");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bob") && stderr.contains("orders"),
        "{stderr}"
    );

    // Denials are counted.
    let (_, text) = http_get(&broker.admin_addr, "/metrics");
    let counted: f64 = ["produce", "consume", "admin", "describe"]
        .iter()
        .filter_map(|a| {
            metric(
                &text,
                &format!("logbook_acl_denials_total{{action=\"{a}\"}}"),
            )
        })
        .sum();
    assert!(
        counted >= f64::from(denied) + 2.0,
        "{counted} denials counted, {denied} made\n{text}"
    );

    // The policy file is reloaded without a restart: eve may now consume orders.
    std::fs::write(&policy, format!("{rules}p, eve, orders, consume\n")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while as_subject(&addr, &who("eve"), "consume", "orders")
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the new policy was never loaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And nothing else changed for her.
    assert!(matches!(
        as_subject(&addr, &who("eve"), "produce", "orders").await,
        Err((Code::PermissionDenied, _))
    ));

    // A following consumer whose right is revoked is cut off after the reload.
    let mut follower = alice
        .consume_stream("orders", 0, logbook::client::Start::Earliest, 1 << 20)
        .await
        .unwrap();
    assert!(follower.next().await.unwrap().is_ok(), "allowed at first");
    std::fs::write(&policy, "p, alice, orders, produce\np, ops, *, admin\n").unwrap();
    let producer = {
        let (addr, tls) = (addr.clone(), who("alice"));
        tokio::spawn(async move {
            let mut c = Client::connect_with(&addr, Some(&tls)).await.unwrap();
            for _ in 0..150 {
                let _ = c.produce("orders", Some(0), &[record("more")]).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match follower.next().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Some(e),
                None => return None,
            }
        }
    })
    .await
    .expect("the revoked consumer's stream never ended");
    producer.abort();
    let e = ended.expect("the stream ends with an error, not silently");
    assert_eq!(e.code(), Some(Code::PermissionDenied), "{e}");
}

/// Waits (up to 60 s) until the metadata at `addr`, read over `tls`, lists `servers` servers.
async fn wait_formed_over_tls(addr: &str, tls: &ClientTls, servers: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let formed = async {
            let mut c = Client::connect_with(addr, Some(tls)).await.ok()?;
            let m = c.metadata().await.ok()?;
            (m.servers.len() == servers).then_some(())
        };
        if formed.await.is_some() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the cluster never formed over TLS"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (up to 30 s per node) until every node at `addrs` serves exactly `values` from
/// partition 0 of `topic`.
async fn every_node_holds(addrs: &[String], tls: &ClientTls, topic: &str, values: &[String]) {
    for addr in addrs {
        let mut node = Client::connect_with(addr, Some(tls)).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got: Vec<String> = node
                .consume(topic, 0, 0, 1 << 20, Duration::ZERO)
                .await
                .map(|f| {
                    f.records
                        .iter()
                        .map(|r| {
                            String::from_utf8_lossy(r.value.as_deref().unwrap_or_default())
                                .into_owned()
                        })
                        .collect()
                })
                .unwrap_or_default();
            if got == values {
                break;
            }
            assert!(Instant::now() < deadline, "{addr} holds {got:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_replicates_over_mutual_tls_with_an_encrypted_gossip_key_file() {
    let root = tempfile::tempdir().unwrap();
    let ca = root.path().join("ca");
    authority(&ca, &["app"]);
    // The gossip key comes from a file (never a flag).
    let key_file = root.path().join("gossip.key");
    std::fs::write(&key_file, "00112233445566778899aabbccddeeff\n").unwrap();
    let mut flags = server_flags(&ca);
    flags.extend([
        "--gossip-key-file".to_string(),
        key_file.display().to_string(),
    ]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let nodes = root.path().join("nodes");
    std::fs::create_dir_all(&nodes).unwrap();
    let cluster = common::cluster::Cluster::start_with(&nodes, 3, &flags);
    let addrs = cluster.addrs();
    let app = tls_as(&ca, &ca, "app");

    // Formation, Raft and the metadata group all run over mutual TLS between the nodes.
    wait_formed_over_tls(&addrs[0], &app, 3).await;
    let client = logbook::client::ClusterClient::connect_with(
        &addrs,
        logbook::client::ReadFrom::Replicas,
        Some(app.clone()),
    )
    .await
    .unwrap();
    client
        .any()
        .await
        .unwrap()
        .create_topic("replicated", 1, pb::TopicConfig::default())
        .await
        .unwrap();
    let values: Vec<String> = (0..20).map(|i| format!("v{i}")).collect();
    for v in &values {
        client
            .produce("replicated", Some(0), &[record(v)])
            .await
            .unwrap();
    }
    // Every node holds every acknowledged record (followers got them over TLS).
    every_node_holds(&addrs, &app, "replicated", &values).await;
    // Gossip was encrypted with the key from the file.
    let log = cluster.nodes[0].as_ref().unwrap().log();
    assert!(log.contains("encrypted=true"), "{log}");

    // A CA rotation without restarts: trust both CAs, move the node certificate to the new CA,
    // then drop the old CA. Nodes reconnect to each other with the new certificate each time,
    // so replication goes on; afterwards only the new CA's clients get in.
    let next = root.path().join("next");
    authority(&next, &["app"]);
    let admin: Vec<String> = cluster
        .nodes
        .iter()
        .flatten()
        .map(|n| n.admin_addr.clone())
        .collect();
    let replace = |to: &Path, content: Vec<u8>| {
        let tmp = to.with_extension("tmp");
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, to).unwrap();
    };
    let read = |p: PathBuf| std::fs::read(p).unwrap();
    let mut both = read(pem(&ca, "ca"));
    both.extend(read(pem(&next, "ca")));
    let steps: Vec<Vec<(PathBuf, Vec<u8>)>> = vec![
        vec![(pem(&ca, "ca"), both)],
        vec![
            (key(&ca, "n1"), read(key(&next, "n1"))),
            (pem(&ca, "n1"), read(pem(&next, "n1"))),
        ],
        vec![(pem(&ca, "ca"), read(pem(&next, "ca")))],
    ];
    for (done, step) in steps.into_iter().enumerate() {
        for (path, content) in step {
            replace(&path, content);
        }
        // Every node reloaded (once per step at least).
        for a in &admin {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let (_, text) = http_get(a, "/metrics");
                let reloads = metric(&text, "logbook_tls_reloads_total").unwrap_or(0.0);
                if reloads >= (done + 1) as f64 {
                    break;
                }
                assert!(Instant::now() < deadline, "{a} did not reload step {done}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let rotated = tls_as(&next, &next, "app");
    let client = logbook::client::ClusterClient::connect_with(
        &addrs,
        logbook::client::ReadFrom::Replicas,
        Some(rotated.clone()),
    )
    .await
    .unwrap();
    let mut all = values.clone();
    for i in 20..30 {
        let v = format!("v{i}");
        client
            .produce("replicated", Some(0), &[record(&v)])
            .await
            .unwrap();
        all.push(v);
    }
    every_node_holds(&addrs, &rotated, "replicated", &all).await;
    let (code, text) = failure(
        create_topic(&addrs[0], Some(&tls_as(&next, &ca, "app")), "old-ca")
            .await
            .unwrap_err(),
    );
    assert_eq!(code, Some(Code::Unauthenticated), "{text}");
}

/// Peers dialled by addresses their certificates do not list (the private IPs of an
/// auto-scaling group) are checked against `tls_peer_server_name` instead: node certificates
/// that carry only that DNS name still form a cluster and replicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_are_checked_against_tls_peer_server_name() {
    let root = tempfile::tempdir().unwrap();
    let ca = root.path().join("ca");
    let d = ca.to_str().unwrap();
    certs(&["init", "--dir", d, "--name", "peer-name CA"]);
    // No IP address and no localhost: only the shared name.
    certs(&[
        "issue",
        "--dir",
        d,
        "--server",
        "--name",
        "n1",
        "--dns",
        "logbook-node",
    ]);
    let mut flags = server_flags(&ca);
    flags.extend(["--tls-peer-server-name".into(), "logbook-node".into()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let nodes = root.path().join("nodes");
    std::fs::create_dir_all(&nodes).unwrap();
    let cluster = common::cluster::Cluster::start_with(&nodes, 3, &flags);
    let addrs = cluster.addrs();
    // The node certificate doubles as a client certificate; it names the same DNS name.
    let tls = ClientTls::new(
        TlsFiles {
            ca: pem(&ca, "ca"),
            cert: Some(pem(&ca, "n1")),
            key: Some(key(&ca, "n1")),
        },
        "logbook-node",
    )
    .unwrap();
    let client = logbook::client::ClusterClient::connect_with(
        &addrs,
        logbook::client::ReadFrom::Replicas,
        Some(tls.clone()),
    )
    .await
    .unwrap();
    // Formation and the metadata group run over TLS between the nodes; wait for all three (a
    // topic created earlier would get fewer replicas).
    wait_formed_over_tls(&addrs[0], &tls, 3).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    // A topic at RF = 3: every node holds its records, replicated over TLS.
    loop {
        let created = async {
            client
                .any()
                .await?
                .create_topic("named", 1, pb::TopicConfig::default())
                .await
        };
        match created.await {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "no topic over TLS: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let values: Vec<String> = (0..5).map(|i| format!("v{i}")).collect();
    for v in &values {
        client
            .produce("named", Some(0), &[record(v)])
            .await
            .unwrap();
    }
    every_node_holds(&addrs, &tls, "named", &values).await;
}
