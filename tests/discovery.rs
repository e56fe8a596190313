//! Peer discovery by EC2 tag (`join_aws_tag`) against a real EC2-protocol server: moto's
//! server (`scripts/test-tools.sh` installs it; `make test` runs that through setup). The test
//! launches "instances" whose private addresses are loopback addresses, so brokers bound to
//! them find each other through the EC2 API alone.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use common::broker::BrokerProcess;
use common::cluster::{FAST_RAFT, wait_for};
use logbook::cluster::discovery::{DiscoveryError, Ec2TagDiscovery};

const TAG_KEY: &str = "logbook-cluster";

/// moto's server on a free port, killed on drop.
struct MotoServer {
    child: Child,
    endpoint: String,
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto_server_bin() -> PathBuf {
    let bin = std::env::var_os("LOGBOOK_MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-venv/bin/moto_server")
        });
    assert!(
        bin.exists(),
        "{} is missing: run scripts/test-tools.sh (make test does, through scripts/setup.sh)",
        bin.display()
    );
    bin
}

async fn start_moto() -> MotoServer {
    let port = common::cluster::free_port();
    let child = Command::new(moto_server_bin())
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto_server");
    let server = MotoServer {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    wait_for(
        Duration::from_secs(30),
        "moto_server accepts",
        || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        },
    )
    .await;
    server
}

fn ec2_client(endpoint: &str) -> aws_sdk_ec2::Client {
    let config = aws_sdk_ec2::Config::builder()
        .behavior_version(aws_sdk_ec2::config::BehaviorVersion::latest())
        .region(aws_sdk_ec2::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            common::broker::S3_KEY,
            common::broker::S3_SECRET,
            None,
            None,
            "test",
        ))
        .build();
    aws_sdk_ec2::Client::from_conf(config)
}

/// Launches one instance with `ip` in `subnet`, tagged `TAG_KEY=value`; returns its id.
async fn launch(ec2: &aws_sdk_ec2::Client, subnet: &str, ip: &str, value: &str) -> String {
    let out = ec2
        .run_instances()
        .image_id("ami-12c6146b")
        .min_count(1)
        .max_count(1)
        .subnet_id(subnet)
        .private_ip_address(ip)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Instance)
                .tags(Tag::builder().key(TAG_KEY).value(value).build())
                .build(),
        )
        .send()
        .await
        .expect("run_instances");
    out.instances()[0].instance_id().unwrap().to_string()
}

/// A port free for TCP and UDP on every one of `ips` (gossip binds both).
fn port_free_on(ips: &[&str]) -> u16 {
    loop {
        let port = common::cluster::free_port();
        let free = ips.iter().all(|ip| {
            std::net::TcpListener::bind((*ip, port)).is_ok()
                && std::net::UdpSocket::bind((*ip, port)).is_ok()
        });
        if free {
            return port;
        }
    }
}

#[test]
fn nodes_find_each_other_by_ec2_tag() {
    // SAFETY: set before any other thread of this test binary exists (the only test in it,
    // and the runtime is built afterwards). The in-process discovery uses the SDK's standard
    // credential chain, as the broker does.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", common::broker::S3_KEY);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", common::broker::S3_SECRET);
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(scenario());
}

async fn scenario() {
    let moto = start_moto().await;
    let ec2 = ec2_client(&moto.endpoint);
    let vpc = ec2
        .create_vpc()
        .cidr_block("127.0.0.0/16")
        .send()
        .await
        .expect("create_vpc");
    let vpc_id = vpc.vpc().and_then(|v| v.vpc_id()).unwrap();
    let subnet = ec2
        .create_subnet()
        .vpc_id(vpc_id)
        .cidr_block("127.0.0.0/24")
        .send()
        .await
        .expect("create_subnet");
    let subnet_id = subnet.subnet().and_then(|s| s.subnet_id()).unwrap();

    let node_ips = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
    for ip in node_ips {
        launch(&ec2, subnet_id, ip, "disco").await;
    }
    // Another cluster's node, and one of ours that was terminated: neither is a seed.
    launch(&ec2, subnet_id, "127.0.0.5", "other-cluster").await;
    let gone = launch(&ec2, subnet_id, "127.0.0.6", "disco").await;
    ec2.terminate_instances()
        .instance_ids(&gone)
        .send()
        .await
        .expect("terminate_instances");
    let terminated = ec2
        .describe_instances()
        .filters(Filter::builder().name("instance-id").values(&gone).build())
        .send()
        .await
        .unwrap();
    let state = terminated.reservations()[0].instances()[0]
        .state()
        .and_then(|s| s.name())
        .map(|n| n.as_str().to_string());
    assert_eq!(state.as_deref(), Some("terminated"));

    // The library: this node's own address is left out, so are other tags and dead instances.
    let port = port_free_on(&node_ips);
    let discovery = Ec2TagDiscovery {
        tag: format!("{TAG_KEY}=disco"),
        region: "us-east-1".into(),
        endpoint: moto.endpoint.clone(),
        gossip_port: port,
    };
    let seeds = discovery.connect().await.unwrap();
    let own = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
    assert_eq!(
        seeds.seeds(own).await.unwrap(),
        vec![format!("127.0.0.3:{port}"), format!("127.0.0.4:{port}")]
    );
    assert_eq!(seeds.seeds(None).await.unwrap().len(), 3);
    let nobody = Ec2TagDiscovery {
        tag: format!("{TAG_KEY}=nobody"),
        ..discovery.clone()
    };
    assert!(
        nobody
            .connect()
            .await
            .unwrap()
            .seeds(None)
            .await
            .unwrap()
            .is_empty()
    );
    // An API that does not answer is an error (the broker retries it), not "no seeds".
    let down = Ec2TagDiscovery {
        endpoint: format!("http://127.0.0.1:{}", common::cluster::free_port()),
        ..discovery.clone()
    };
    let err = down.connect().await.unwrap().seeds(None).await.unwrap_err();
    assert!(matches!(err, DiscoveryError::Api { .. }), "{err}");

    // The broker: three nodes with no seed list, only the tag, form one cluster.
    let dir = tempfile::tempdir().unwrap();
    let tag = format!("{TAG_KEY}=disco");
    let nodes: Vec<BrokerProcess> = node_ips
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            let gossip = format!("{ip}:{port}");
            let mut args = vec![
                "--gossip-addr",
                &gossip,
                "--join-aws-tag",
                &tag,
                "--join-aws-region",
                "us-east-1",
                "--join-aws-endpoint",
                &moto.endpoint,
                "--bootstrap-expect",
                "3",
            ];
            args.extend(FAST_RAFT);
            BrokerProcess::start(&dir.path().join(format!("node{i}")), &args)
        })
        .collect();
    for node in &nodes {
        let addr = node.addr.clone();
        wait_for(
            Duration::from_secs(60),
            &format!("{addr} sees 3 servers"),
            || {
                let addr = addr.clone();
                async move {
                    match logbook::client::Client::connect(&addr).await {
                        Ok(mut c) => c.metadata().await.is_ok_and(|m| m.servers.len() == 3),
                        Err(_) => false,
                    }
                }
            },
        )
        .await;
    }
    for node in &nodes {
        let log = node.log();
        assert!(
            log.lines()
                .any(|l| l.contains("joined the gossip cluster") && l.contains("via=\"ec2_tag\"")),
            "no join through EC2 tag discovery in the log:\n{log}"
        );
    }
}
