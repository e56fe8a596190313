//! Hosts with their own addresses on one machine, for network cuts: a network namespace per
//! node, joined by veth pairs to a bridge in the test's namespace (so the test reaches every
//! node), and iptables rules inside a node's namespace to cut it off from its peers. Needs
//! root (as the disk-full tests do).

use std::process::Command;

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {args:?}: {e} (network tests need iproute2 and iptables)")
        });
    assert!(
        out.status.success(),
        "{args:?} failed (network tests need root): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A bridge and one namespace per host; removed on drop.
pub struct NetLab {
    /// Bridge name.
    bridge: String,
    /// Namespace names, by host.
    pub namespaces: Vec<String>,
    /// Address of each host.
    pub ips: Vec<String>,
}

impl NetLab {
    /// Creates `hosts` namespaces on a fresh /24 (unique per process).
    pub fn new(hosts: usize) -> NetLab {
        let id = std::process::id() % 10_000;
        let subnet = 100 + (std::process::id() % 150);
        let bridge = format!("lbbr{id}");
        run(&["ip", "link", "add", &bridge, "type", "bridge"]);
        let mut lab = NetLab {
            bridge: bridge.clone(),
            namespaces: Vec::new(),
            ips: Vec::new(),
        };
        run(&[
            "ip",
            "addr",
            "add",
            &format!("10.{subnet}.0.1/24"),
            "dev",
            &bridge,
        ]);
        run(&["ip", "link", "set", &bridge, "up"]);
        // Docker sets the FORWARD policy to DROP, and bridged traffic goes through it.
        run(&[
            "iptables", "-I", "FORWARD", "-i", &bridge, "-o", &bridge, "-j", "ACCEPT",
        ]);
        for i in 0..hosts {
            let ns = format!("lb{id}n{i}");
            let (host_end, ns_end) = (format!("lb{id}h{i}"), format!("lb{id}c{i}"));
            let ip = format!("10.{subnet}.0.{}", 10 + i);
            run(&["ip", "netns", "add", &ns]);
            lab.namespaces.push(ns.clone());
            run(&[
                "ip", "link", "add", &host_end, "type", "veth", "peer", "name", &ns_end,
            ]);
            run(&["ip", "link", "set", &ns_end, "netns", &ns]);
            run(&["ip", "link", "set", &host_end, "master", &bridge]);
            run(&["ip", "link", "set", &host_end, "up"]);
            run(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "ip",
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                &ns_end,
            ]);
            run(&[
                "ip", "netns", "exec", &ns, "ip", "link", "set", &ns_end, "up",
            ]);
            run(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
            lab.ips.push(ip);
        }
        lab
    }

    /// Cuts host `i` off from every other host (the test can still reach it).
    pub fn isolate(&self, i: usize) {
        for (j, peer) in self.ips.iter().enumerate() {
            if j == i {
                continue;
            }
            let ns = &self.namespaces[i];
            run(&[
                "ip", "netns", "exec", ns, "iptables", "-A", "INPUT", "-s", peer, "-j", "DROP",
            ]);
            run(&[
                "ip", "netns", "exec", ns, "iptables", "-A", "OUTPUT", "-d", peer, "-j", "DROP",
            ]);
        }
    }

    /// Removes every cut of host `i`.
    pub fn heal(&self, i: usize) {
        let ns = &self.namespaces[i];
        run(&["ip", "netns", "exec", ns, "iptables", "-F"]);
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "delete", ns]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "delete", &self.bridge])
            .status();
        let _ = Command::new("iptables")
            .args([
                "-D",
                "FORWARD",
                "-i",
                &self.bridge,
                "-o",
                &self.bridge,
                "-j",
                "ACCEPT",
            ])
            .status();
    }
}
